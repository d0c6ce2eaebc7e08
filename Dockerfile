# sluice's container image: a static binary on distroless, non-root, its
# root file system read-only friendly (sluice writes only under its data
# directory, the volume below).
#
#   docker build -t registry.example.com/sluice:1.0.0 \
#     --build-arg VERSION=1.0.0 --build-arg COMMIT=$(git rev-parse HEAD) \
#     --build-arg DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ) .
#   docker run --rm -p 8080:8080 -v sluice-data:/var/lib/sluice registry.example.com/sluice:1.0.0
#
# cmd/sluice/dockerfile_test.go keeps this file consistent with the binary's
# flags, go.mod's toolchain and docs/deploy/k8s-sidecar.yaml.

# The toolchain go.mod pins (its standard-library fixes), not just any 1.26.
FROM golang:1.26.10-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=devel
ARG COMMIT=
ARG DATE=
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT} -X main.date=${DATE}" -o /out/sluice ./cmd/sluice

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sluice /usr/local/bin/sluice
# distroless's nonroot user; the Kubernetes manifest runs as the same ids.
USER 65532:65532
# The spool and, without --upstream, the embedded NATS server's store.
VOLUME ["/var/lib/sluice"]
WORKDIR /var/lib/sluice
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 CMD ["/usr/local/bin/sluice", "healthcheck", "--url", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["/usr/local/bin/sluice"]
# All interfaces inside the container; the embedded NATS server unless
# --upstream (or a --config file) names one.
CMD ["run", "--listen", ":8080", "--data-dir", "/var/lib/sluice"]
