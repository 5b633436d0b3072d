# dister in one FROM scratch stage: the image holds the static binary alone.
# Build the binary on the host first (no Go image is needed or pulled):
#
#   CGO_ENABLED=0 go build -o dister ./standalone/cmd/dister
#   docker build -t dister .
#
# The daemon keeps its data in /data (mount a volume there) and reads its
# settings from DISTER_* variables or flags (README.md, "Daemon
# configuration"). Off loopback it needs a token: DISTER_TOKEN.
FROM scratch
COPY dister /dister
ENV DISTER_DATA_DIR=/data
VOLUME /data
EXPOSE 4166 4167 4168
ENTRYPOINT ["/dister"]
CMD ["server"]
