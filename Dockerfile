# CairnDB in a container: a release build of `cairn` on a small Ubuntu runtime.
#   docker build -t cairndb .
#   docker compose -f deploy/compose.yaml up        (3 nodes; see the README's "Deploying")
ARG SWIFT_VERSION=6.3
ARG UBUNTU=noble

FROM swift:${SWIFT_VERSION}-${UBUNTU} AS build
RUN apt-get update && apt-get install -y --no-install-recommends libsqlite3-dev libedit-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so a change to the sources alone reuses the resolved packages' layer.
COPY Package.swift ./
RUN swift package resolve
COPY Sources ./Sources
COPY Tests ./Tests
# Built into the binary by the EmbedFiles plugin: the OpenAPI document and the web console.
COPY Plugins ./Plugins
COPY docs ./docs
COPY console ./console
RUN swift build -c release --product cairn --static-swift-stdlib \
    && cp "$(swift build -c release --show-bin-path)/cairn" /cairn

FROM ubuntu:${UBUNTU}
# SQLite and libedit are the system libraries the build linked; tzdata for the zones a query may name.
RUN apt-get update && apt-get install -y --no-install-recommends libsqlite3-0 libedit2 ca-certificates tzdata curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data cairn && mkdir -p /data && chown cairn /data
COPY --from=build /cairn /usr/local/bin/cairn
USER cairn
VOLUME /data
# HTTP API, Raft.
EXPOSE 4001 4002
ENV CAIRN_DATA_DIR=/data CAIRN_HTTP_ADDR=0.0.0.0:4001 CAIRN_RAFT_ADDR=0.0.0.0:4002
HEALTHCHECK --interval=10s --timeout=3s CMD curl -fsS http://127.0.0.1:4001/v1/health || exit 1
ENTRYPOINT ["cairn", "server"]
