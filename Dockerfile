# syntax=docker/dockerfile:1
# trino-router as a small container image: the release binary on distroless (glibc, no shell), running as a
# non-root user with a read-only root filesystem (see deploy/base/deployment.yaml). Build with BuildKit:
#   DOCKER_BUILDKIT=1 docker build --build-arg REVISION="$(git rev-parse HEAD)" -t trino-router:0.1.0 .
# The crates.io registry and the target directory are BuildKit cache mounts: a source change recompiles the
# router, not its dependencies. The build command is the one README.md uses for a release build, and it
# builds only the router (not tools/, the emulator and load tool); tests/e2e/test_deploy.py checks both.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin trino-router \
    && cp /src/target/release/trino-router /usr/local/bin/trino-router

FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=""
LABEL org.opencontainers.image.title="trino-router" \
      org.opencontainers.image.description="Routing decisions for Trino traffic, as an Envoy external processor" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /usr/local/bin/trino-router /usr/local/bin/trino-router
USER nonroot:nonroot
# gRPC (ext_proc, RDS, admin, grpc.health.v1) and Prometheus metrics.
EXPOSE 50051 9464
ENTRYPOINT ["/usr/local/bin/trino-router"]
CMD ["serve", "--config", "/etc/trino-router/router.yaml"]
