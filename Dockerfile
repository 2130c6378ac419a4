# A container image of Veil: `docker build -t veil .` then see docs/deployment.md.
# Build stage: the workspace, release profile, locked dependencies.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p veil-cli && strip target/release/veil

# Run stage: the binary alone, as an unprivileged user, with two volumes kept apart.
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home /var/lib/veil --shell /usr/sbin/nologin veil \
 && install -d -o veil -g veil -m 0700 /var/lib/veil /var/lib/veil-vault /etc/veil
COPY --from=build /src/target/release/veil /usr/local/bin/veil
USER veil
WORKDIR /var/lib/veil
# The data and the vault: separate volumes, separate backups (docs/governance.md#backups).
VOLUME ["/var/lib/veil", "/var/lib/veil-vault"]
ENV VEIL_CONFIG=/etc/veil/veil.toml \
    VEIL_LISTEN=0.0.0.0:8700 \
    VEIL_OTLP_LISTEN=0.0.0.0:4318 \
    VEIL_OTLP_GRPC_LISTEN=0.0.0.0:4317
EXPOSE 8700 4318 4317
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/veil"]
CMD ["serve"]
