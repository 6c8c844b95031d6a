# syntax=docker/dockerfile:1
# One small non-root image with every binary of the suite (clinic, clinic-permissions,
# clinic-migrations, clinic-deletions, clinic-notifications), what the operators' commands read
# (topics.yaml, connectors/, the Avro schemas) and the Rust dependencies' SBOM (/app/sbom), for
# the Helm chart in helm/clinic.
#
# This is the recipe for machines with registry access (it pulls rust and distroless). The
# project's own machines reach package registries only; there scripts/image builds the same
# image with podman, on a base made from the Debian packages distroless's cc-debian12 holds
# (without libssl3, which nothing here links). Both lay out what scripts/dist lays out, the one
# source of the layout; the test command builds scripts/image's and runs the chart's containers
# from it.
#   docker build --build-arg REVISION=$(git rev-parse HEAD) --build-arg SOURCE=<repository URL> -t clinic .

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN scripts/dist --profile release --sbom /out

FROM gcr.io/distroless/cc-debian12:nonroot
ARG REVISION=unknown
ARG VERSION=0.1.0
ARG SOURCE=unknown
COPY --from=build /out/root/ /
COPY --from=build /out/bin/ /usr/local/bin/
COPY --from=build /out/app/ /app/
LABEL org.opencontainers.image.title="clinic" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="BSD-2-Clause" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
WORKDIR /app
USER 65532:65532
# No entrypoint: the chart names the binary (args: ["clinic", "api"], ["clinic-permissions"]).
CMD ["clinic", "--help"]
