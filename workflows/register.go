package workflows

import (
	"go.temporal.io/sdk/workflow"

	"github.com/replicator/replicator/internal/contract"
)

// Registry is what a worker registers workflows with (worker.Worker and the replayer).
type Registry interface {
	RegisterWorkflowWithOptions(w interface{}, options workflow.RegisterOptions)
}

// Register registers every workflow under its contract name.
func Register(r Registry) {
	r.RegisterWorkflowWithOptions(ReplicationWorkflow, workflow.RegisterOptions{Name: contract.ReplicationWorkflow})
	r.RegisterWorkflowWithOptions(VMReplicationWorkflow, workflow.RegisterOptions{Name: contract.VMReplicationWorkflow})
	r.RegisterWorkflowWithOptions(FailoverWorkflow, workflow.RegisterOptions{Name: contract.FailoverWorkflow})
	r.RegisterWorkflowWithOptions(UndoFailoverWorkflow, workflow.RegisterOptions{Name: contract.UndoFailoverWorkflow})
	r.RegisterWorkflowWithOptions(PlannedFailoverWorkflow, workflow.RegisterOptions{Name: contract.PlannedFailoverWorkflow})
	r.RegisterWorkflowWithOptions(PermanentFailoverWorkflow, workflow.RegisterOptions{Name: contract.PermanentFailoverWorkflow})
	r.RegisterWorkflowWithOptions(FailbackWorkflow, workflow.RegisterOptions{Name: contract.FailbackWorkflow})
	r.RegisterWorkflowWithOptions(CommitFailbackWorkflow, workflow.RegisterOptions{Name: contract.CommitFailbackWorkflow})
	r.RegisterWorkflowWithOptions(UndoFailbackWorkflow, workflow.RegisterOptions{Name: contract.UndoFailbackWorkflow})
	r.RegisterWorkflowWithOptions(FailoverPlanWorkflow, workflow.RegisterOptions{Name: contract.FailoverPlanWorkflow})
	r.RegisterWorkflowWithOptions(UndoFailoverPlanWorkflow, workflow.RegisterOptions{Name: contract.UndoFailoverPlanWorkflow})
}
