# syntax=docker/dockerfile:1
# The Outrigger image: the `outrigger` binary on Debian slim, as a non-root user.
#
#   docker build -t registry.example.com/platform/outrigger:0.1.0 .
#
# Needs BuildKit (the default builder since Docker 23) for the cache mounts. docs/kubernetes.md,
# "The image", says why each choice is what it is.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
# rdkafka builds librdkafka from source (rdkafka-sys runs its configure script and make): that
# needs bash, make, a C compiler, zlib's headers (the default libz feature) and OpenSSL's (the
# ssl feature, for SASL_SSL and SCRAM), found with pkg-config. ring (rustls, for amqps://)
# needs the C compiler too. The rust image has most of this already; naming it keeps the build
# honest if the base changes.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config zlib1g-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The README's build command (Cargo.lock pins the versions). The target dir is a cache mount,
# so the binary is copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release -p outrigger \
 && install -m 0755 target/release/outrigger /usr/local/bin/outrigger

# Debian slim rather than distroless: the binary links glibc, libgcc_s, zlib and OpenSSL from
# the system, and the chart's preStop hook for Kubernetes < 1.29 needs bash and sleep.
FROM debian:${DEBIAN_RELEASE}-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 outrigger \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin outrigger \
 && mkdir -p /etc/outrigger /var/lib/outrigger \
 && chown 65532:65532 /var/lib/outrigger
COPY --from=build /usr/local/bin/outrigger /usr/local/bin/outrigger
LABEL org.opencontainers.image.title="outrigger" \
      org.opencontainers.image.description="Consumer-side reliability sidecar: each event once, retries, dead letters." \
      org.opencontainers.image.licenses="Apache-2.0"
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 65532:65532
# The embedded dedup store's default path is relative: keep it on the data volume.
WORKDIR /var/lib/outrigger
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/outrigger"]
CMD ["run", "--config", "/etc/outrigger/policy.toml"]
