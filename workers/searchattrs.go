package main

import (
	"context"
	"fmt"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/replicator/replicator/internal/contract"
)

// registerSearchAttributes adds the custom search attributes replicator sets
// (ReplicatorJob, ReplicatorVM) to the namespace, so that the Web UI and the
// CLI find a job's or a VM's runs (ReplicatorVM = 'web01'). Those already
// there are left alone. deploy/temporal/create-namespace.sh does the same for
// a production cluster.
func registerSearchAttributes(ctx context.Context, c client.Client, namespace string) error {
	have, err := c.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: namespace})
	if err != nil {
		return fmt.Errorf("listing the search attributes of namespace %s: %w", namespace, err)
	}
	want := map[string]enums.IndexedValueType{
		contract.SearchAttributeJob: enums.INDEXED_VALUE_TYPE_KEYWORD,
		contract.SearchAttributeVM:  enums.INDEXED_VALUE_TYPE_KEYWORD_LIST,
	}
	add := map[string]enums.IndexedValueType{}
	for name, typ := range want {
		if _, ok := have.GetCustomAttributes()[name]; !ok {
			add[name] = typ
		}
	}
	if len(add) == 0 {
		return nil
	}
	_, err = c.OperatorService().AddSearchAttributes(ctx, &operatorservice.AddSearchAttributesRequest{Namespace: namespace, SearchAttributes: add})
	if err != nil {
		return fmt.Errorf("adding search attributes %v to namespace %s: %w", add, namespace, err)
	}
	return nil
}
