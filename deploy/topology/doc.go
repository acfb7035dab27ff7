// Package topology runs the production topology of docker-compose.yml
// without Docker and drives it through the faults an operator's sites see.
//
// Its test starts, each in its own process with its own data folder and
// configuration file: a private PostgreSQL cluster on a loopback port, the
// schema and namespace steps of deploy/temporal with the environment that
// docker-compose.yml gives them, the Temporal server (go.temporal.io/server,
// the release go.mod pins) on that database with mutual TLS on its frontend
// and between its services (certificates issued by the `starter pki`
// commands of README's "Deploying", which docker-compose.yml's header must
// repeat, each with its roles), `workers --roles jobs`, two `workers --roles
// proxy` sharing one source host's task queue, and `workers --roles target`
// behind a network link the test can slow down. The scenarios kill those
// processes with SIGKILL or restart the services, and each ends with every
// replica compared byte for byte with its source and every restore point
// verified against its digests.
//
// The outside programs come from .ci/run: PostgreSQL from Debian's packages,
// and `go install` of the Temporal server, its SQL tool and the Temporal CLI.
// Under CI=true a missing one fails the test; elsewhere it skips with the
// command that installs it.
package topology
