# capstan as a container: a static binary in an image FROM scratch that
# runs as non-root. Mount known_hosts, the SSH key and the secrets file
# read-only, and keep /var/lib/capstan on a volume.
#
#   docker build -t capstan .
#   docker run -v capstan-state:/var/lib/capstan -v /etc/capstan:/etc/capstan:ro capstan
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /out/capstan ./cmd/capstan \
 && mkdir -p /out/state && echo 'capstan:x:65532:65532:capstan:/var/lib/capstan:/sbin/nologin' > /out/passwd

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/passwd /etc/passwd
COPY --from=build --chown=65532:65532 /out/state /var/lib/capstan
COPY --from=build /out/capstan /capstan
USER 65532:65532
ENV HOME=/var/lib/capstan
VOLUME /var/lib/capstan
EXPOSE 9740
ENTRYPOINT ["/capstan"]
CMD ["serve", "--config", "/etc/capstan/capstan.yml"]
