# syntax=docker/dockerfile:1
#
# The replicator image: the `workers` process (entrypoint) and the `starter`
# operator command line, both static Go binaries (CGO_ENABLED=0: every
# dependency is pure Go), on Debian slim with qemu-utils for operators who
# inspect or convert disk images inside the container.
#
# The binaries are built with -tags nodev: the embedded Temporal server of
# `workers --dev` (go.temporal.io/server and the cloud SDKs it brings, about
# 1,300 of the 1,850 packages of a default build) stays out of the image, and
# `workers --dev` in the image fails with a message saying so. The image's
# workers dial an existing Temporal cluster (--config FILE).
#
#   docker build -t replicator .
#   docker run --rm replicator --help

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# deploy/deploy_test.go checks that this command is the one .ci/run builds.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build CGO_ENABLED=0 go build -trimpath -tags nodev -o /out/ ./workers ./starter

FROM debian:bookworm-slim
RUN apt-get update \
	&& apt-get install -y --no-install-recommends ca-certificates qemu-utils \
	&& rm -rf /var/lib/apt/lists/* \
	&& groupadd --system --gid 10001 replicator \
	&& useradd --system --uid 10001 --gid replicator --home-dir /var/lib/replicator --shell /usr/sbin/nologin replicator \
	&& mkdir -p /etc/replicator/tls /var/lib/replicator/lab /var/lib/replicator/replicas \
	&& chown -R replicator:replicator /var/lib/replicator
COPY --from=build /out/workers /out/starter /usr/local/bin/
USER replicator:replicator
WORKDIR /var/lib/replicator
# 7300: the agent's data channel; 9090: Prometheus metrics when metrics.listen is set.
EXPOSE 7300 9090
ENTRYPOINT ["/usr/local/bin/workers"]
CMD ["--config", "/etc/replicator/replicator.yaml"]
