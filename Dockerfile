# ams-thumbnails container image.
#
#   docker build -t ams-thumbnails .
#   docker run --rm -p 8080:8080 ams-thumbnails
#
# The image serves the bundled sample library (samples/, local mode) with config/default.toml;
# every setting can be overridden with AMS_THUMBNAILS_* environment variables ("__" separates
# nesting levels, e.g. AMS_THUMBNAILS_SERVER__LISTEN), or a different file mounted and named with
# AMS_THUMBNAILS_CONFIG.
#
# Note for the README: when the container is reached through a published port other than 8080
# (e.g. `-p 9000:8080`) or through a proxy, set AMS_THUMBNAILS_SERVER__PUBLIC_BASE_URL
# (e.g. http://localhost:9000) so that the URLs the service hands out for its own files point to
# where clients can actually reach it.

# ---------------------------------------------------------------------------------------------
# Build stage
# ---------------------------------------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS builder

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /build

# jemalloc (the service's allocator, tikv-jemalloc-sys) is built from C with ./configure and make;
# the slim image has the compiler but not make.
RUN apt-get update \
    && apt-get install -y --no-install-recommends make=4.3-4.1 \
    && rm -rf /var/lib/apt/lists/*

# 1. Dependencies only: build the locked dependency graph against placeholder sources so that this
#    layer stays cached until Cargo.toml or Cargo.lock changes.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src

# 2. The real sources. COPY keeps the files' modification times, which can be older than the
#    placeholder build above; touch the crate roots so cargo rebuilds the crate instead of keeping
#    the placeholder binary, then check that the binary is the real one.
COPY openapi.yaml ./
COPY src ./src
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && ./target/release/ams-thumbnails --version | grep -q '^ams-thumbnails '

# ---------------------------------------------------------------------------------------------
# Runtime stage
# ---------------------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

# CA roots for outbound HTTPS (Azure backends), taken from the builder so no apt step is needed.
COPY --from=builder /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=builder /build/target/release/ams-thumbnails /usr/local/bin/ams-thumbnails

# The default configuration reads config/default.toml and the sample library (samples/) relative
# to the working directory. Everything is owned by root and only readable by the service user.
WORKDIR /app
COPY config/ ./config/
COPY samples/ ./samples/

ENV AMS_THUMBNAILS_SERVER__LISTEN=0.0.0.0:8080 \
    AMS_THUMBNAILS_LOG__FORMAT=json

# Unprivileged numeric user and group (no passwd entry needed); the explicit group keeps the
# process out of gid 0, so group-writable files in the build context stay read-only to it.
USER 10001:10001

EXPOSE 8080

# Liveness probe without extra packages: bash's /dev/tcp against /healthz, on the port taken from
# AMS_THUMBNAILS_SERVER__LISTEN (8080 unless overridden).
HEALTHCHECK --interval=30s --timeout=3s --start-period=5s --retries=3 \
    CMD ["bash", "-c", "listen=${AMS_THUMBNAILS_SERVER__LISTEN:-0.0.0.0:8080}; exec 3<>/dev/tcp/127.0.0.1/${listen##*:} && printf 'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && grep -q '^HTTP/1\\.[01] 200 ' <&3"]

ENTRYPOINT ["/usr/local/bin/ams-thumbnails"]
CMD ["serve"]
