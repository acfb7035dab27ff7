// Package deploy holds the files of the container deployment and checks them:
// replicator.yaml is the configuration that docker-compose.yml (at the root of
// the repository) mounts into the worker and agent services, temporal/ the
// schema, namespace and dynamic configuration of the Temporal server on
// PostgreSQL. The tests load the configuration, and check docker-compose.yml
// and the Dockerfile against the repository: the files they mount exist, the
// commands use flags the workers binary defines, and the Dockerfile builds
// with the command CI runs. Package topology (deploy/topology) runs the same
// topology without Docker, from these files, and kills its processes during
// runs. No Go code of the product lives here.
package deploy
