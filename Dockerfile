# Two images from one static binary; their names are set in
# deploy/kustomization.yaml and nowhere else.
#   docker build --target dns .     the DNS server: distroless, non-root
#   docker build --target proxy .   the node agent: needs iptables and conntrack
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /clusterdns ./cmd/clusterdns

FROM debian:bookworm-slim AS proxy
RUN apt-get update && apt-get install -y --no-install-recommends iptables conntrack \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /clusterdns /clusterdns
ENTRYPOINT ["/clusterdns"]

FROM gcr.io/distroless/static-debian12:nonroot AS dns
COPY --from=build /clusterdns /clusterdns
USER 65532:65532
EXPOSE 53/udp 53/tcp 9153/tcp
ENTRYPOINT ["/clusterdns"]
