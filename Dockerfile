# syntax=docker/dockerfile:1
# One small non-root image with every binary of the suite (clinic, clinic-permissions,
# clinic-migrations, clinic-deletions, clinic-notifications) and what the operators' commands
# read (topics.yaml, connectors/, the Avro schemas), for the Helm chart in helm/clinic.
# No container engine runs on the project's machines, so this file is not built there; its
# build step is scripts/dist, which the test command runs too (dev profile).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN scripts/dist --profile release /out

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/root/ /
COPY --from=build /out/bin/ /usr/local/bin/
COPY --from=build /out/app/ /app/
WORKDIR /app
USER 65532:65532
# No entrypoint: the chart names the binary (args: ["clinic", "api"], ["clinic-permissions"]).
CMD ["clinic", "--help"]
