# syntax=docker/dockerfile:1
# Multi-stage build of the `switchboard` binary.
#   docker build -t switchboard:0.1.0 .
# The builder's Debian release must match the runtime's (bookworm / debian12): the binary links glibc dynamically.

FROM rust:1.95-slim-bookworm AS builder
WORKDIR /src

# Dependencies first, against a dummy crate with the real manifests, so that editing src/ reuses this layer
# and only the project itself is recompiled.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src

COPY src ./src
# COPY keeps the files' original mtimes, which can be older than the dummy build's outputs; touching makes
# cargo see the real sources as newer than the cached dummy artefacts.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && install -m 0755 target/release/switchboard /usr/local/bin/switchboard

# distroless/cc: glibc, libgcc and CA certificates and nothing else (no shell, no package manager), which is all
# a rustls-based binary needs. The chart's preStop uses the kubelet's native `sleep` handler, so no shell is needed.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /usr/local/bin/switchboard /usr/local/bin/switchboard
# Numeric so that Kubernetes' runAsNonRoot can verify it without /etc/passwd; matches the chart's runAsUser.
USER 10001:10001
# Set here rather than in a config file so that the image listens on all interfaces whatever file it is given
# (environment wins over the file).
ENV SWITCHBOARD_BIND=0.0.0.0:8787
EXPOSE 8787
ENTRYPOINT ["/usr/local/bin/switchboard"]
CMD ["serve"]
