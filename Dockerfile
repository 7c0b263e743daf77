# ams-thumbnails container image: two runtime targets of one build.
#
#   docker build -t ams-thumbnails .                                  # lean (the default)
#   docker build --target runtime-ffmpeg -t ams-thumbnails:ffmpeg .   # with ffmpeg
#   docker run --rm -p 8080:8080 ams-thumbnails
#
# - `runtime` (the default, last stage): distroless (glibc, CA roots, no shell, no package
#   manager), the binary, the samples. Every mode that reads thumbnails (local, storage, AMS,
#   MK.IO) and generation through the AMS or MK.IO encoders.
# - `runtime-ffmpeg`: Debian slim with Debian's ffmpeg, for generating thumbnails with the ffmpeg
#   encoder where no AMS encoder is left; larger, and it has a shell and apt.
# Pick the lean one unless the ffmpeg encoder is used. Both run as an unprivileged user, serve
# the bundled sample library (samples/, local mode) with config/default.toml from /app, and take
# every setting from AMS_THUMBNAILS_* variables ("__" separates nesting levels); with
# AMS_THUMBNAILS_SOURCE__KIND set to another source the sample file's [source] is left out, and
# AMS_THUMBNAILS_CONFIG=none loads no file at all. Behind a published port other than 8080 or a
# proxy, set AMS_THUMBNAILS_SERVER__PUBLIC_BASE_URL (see README, "Container").

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
# Runtime with ffmpeg (--target runtime-ffmpeg)
# ---------------------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime-ffmpeg

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Debian's ffmpeg (the encoder's only dependency) and CA roots for outbound HTTPS.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg=7:5.1.9-0+deb12u1 ca-certificates=20230311+deb12u1 \
    && rm -rf /var/lib/apt/lists/*
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
# The binary asks its own /healthz (on AMS_THUMBNAILS_SERVER__LISTEN, loopback for 0.0.0.0).
HEALTHCHECK --interval=30s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/ams-thumbnails", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/ams-thumbnails"]
CMD ["serve"]

# ---------------------------------------------------------------------------------------------
# Lean runtime (the default): no shell, no package manager
# ---------------------------------------------------------------------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime

# glibc, libgcc and CA roots come with the base; the binary links everything else statically.
COPY --from=builder /build/target/release/ams-thumbnails /usr/local/bin/ams-thumbnails
WORKDIR /app
COPY config/ ./config/
COPY samples/ ./samples/

ENV AMS_THUMBNAILS_SERVER__LISTEN=0.0.0.0:8080 \
    AMS_THUMBNAILS_LOG__FORMAT=json

USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/ams-thumbnails", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/ams-thumbnails"]
CMD ["serve"]
