# A static clusterdns on a distroless, non-root base. The image's name is set
# in deploy/kustomization.yaml.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /clusterdns ./cmd/clusterdns

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /clusterdns /clusterdns
USER 65532:65532
EXPOSE 53/udp 53/tcp 9153/tcp
ENTRYPOINT ["/clusterdns"]
