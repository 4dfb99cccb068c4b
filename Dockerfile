# trino-router as a small container image: a static-enough release binary on distroless (glibc, no
# shell), running as a non-root user with a read-only root filesystem (see envoy/kubernetes/router.yaml).
#   docker build -t trino-router .
# The build command is the one README.md uses for a release build (tests/e2e/test_deploy.py checks it).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin trino-router

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/trino-router /usr/local/bin/trino-router
USER nonroot:nonroot
# gRPC (ext_proc, RDS, admin, grpc.health.v1) and Prometheus metrics.
EXPOSE 50051 9464
ENTRYPOINT ["/usr/local/bin/trino-router"]
CMD ["serve", "--config", "/etc/trino-router/router.yaml"]
