#!/bin/sh
# Registers the Temporal namespace replicator runs in (temporal.namespace of
# deploy/replicator.yaml) once the server answers; does nothing if it exists.
# Then adds the custom search attributes runs set (ReplicatorJob, ReplicatorVM),
# so that the Web UI and the CLI find a VM's runs: ReplicatorVM = 'web01'.
set -eu

: "${TEMPORAL_ADDRESS:=temporal:7233}"
: "${NAMESPACE:=default}"
: "${RETENTION:=72h}"

tries=0
until temporal operator cluster health --address "$TEMPORAL_ADDRESS"; do
	tries=$((tries + 1))
	if [ "$tries" -ge 30 ]; then
		echo "Temporal at $TEMPORAL_ADDRESS is not healthy after $tries tries" >&2
		exit 1
	fi
	sleep 2
done
if temporal operator namespace describe --namespace "$NAMESPACE" --address "$TEMPORAL_ADDRESS" >/dev/null 2>&1; then
	echo "namespace $NAMESPACE exists"
else
	temporal operator namespace create --namespace "$NAMESPACE" --retention "$RETENTION" --address "$TEMPORAL_ADDRESS"
fi
# A namespace just created reaches the frontend's namespace cache only at its
# next refresh (about 10 seconds by default), and until then the frontend
# answers "Namespace ... is not found" for the search attributes, so wait for
# the list to answer before adding any.
tries=0
until attrs=$(temporal operator search-attribute list --namespace "$NAMESPACE" --address "$TEMPORAL_ADDRESS" 2>&1); do
	tries=$((tries + 1))
	if [ "$tries" -ge 30 ]; then
		echo "namespace $NAMESPACE is not visible to the frontend at $TEMPORAL_ADDRESS after $tries tries: $attrs" >&2
		exit 1
	fi
	sleep 1
done
for attr in ReplicatorJob:Keyword ReplicatorVM:KeywordList; do
	name=${attr%%:*}
	type=${attr#*:}
	if printf '%s\n' "$attrs" | grep -qw "$name"; then
		echo "search attribute $name exists"
	else
		temporal operator search-attribute create --namespace "$NAMESPACE" --address "$TEMPORAL_ADDRESS" --name "$name" --type "$type"
	fi
done
