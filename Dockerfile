# registry-edge container image: build with the Rust toolchain, run on distroless as non-root.
#   docker build -t registry-edge .
# Without access to those base images, scripts/image builds the same runtime stage offline
# over a binary built on the host. How to run it (keys for uid 65532, a registry it can
# reach, the stop timeout): docs/containers.md, "The container image"; with a registry: "Compose".
FROM rust:1-bookworm AS build
# Pingora's zlib-ng build needs cmake; the binary links no OpenSSL.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin registry-edge \
 && strip target/release/registry-edge

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /src/target/release/registry-edge /usr/local/bin/registry-edge
USER nonroot:nonroot
# TLS, plain-HTTP redirect, admin (metrics and health): see conf/compose/registry-edge.yaml.
EXPOSE 8443 8080 9090
# SIGTERM is the graceful stop: the edge stops accepting, lets requests in flight finish and
# exits 0 as soon as none is left, after server.shutdown_grace at the latest. Give the
# container a stop timeout above that grace (compose: stop_grace_period; docker run:
# --stop-timeout), or docker's default 10 s ends a long drain with SIGKILL.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/registry-edge"]
CMD ["run", "--config", "/etc/registry-edge/registry-edge.yaml"]
