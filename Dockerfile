# One image for both daemons of Ambry-py: `ambry server --node ID` and `ambry frontend
# --datacenter DC` (docker-compose.yml runs 2 datacenters x 3 storage nodes + one frontend per
# datacenter from it).
#
# Build it with deploy/build-image.sh, which first builds the wheels of ambry (with its C
# extension) and of its dependencies on the host into build/docker-wheels/: the image installs
# them offline (pip --no-index), so the build needs no network and no compiler. The base
# (AMBRY_BASE) is the official python:3.11-slim, or, where no registry is reachable, a
# Debian bookworm + python3 image that deploy/build-image.sh makes with debootstrap under a
# name of its own (ambry-py-base:bookworm, never the official name); either way the wheels
# must be cp311.
ARG AMBRY_BASE=python:3.11-slim
FROM ${AMBRY_BASE} AS install
# lets deploy/build-image.sh prune this stage's leftover image (legacy builder)
LABEL org.ambry-py.stage=install
COPY build/docker-wheels/ /wheels/
RUN python3 -m venv /opt/ambry \
 && /opt/ambry/bin/pip install --no-index --find-links /wheels --no-cache-dir \
        --disable-pip-version-check 'ambry[ec]' \
 && /opt/ambry/bin/python -c "import ambry.native as n; assert n.implementation == 'c', n.implementation" \
 && /opt/ambry/bin/python -c "import ambry.ec.codec as c; c.Codec(2, 1)"

FROM ${AMBRY_BASE}
# lets deploy/build-image.sh prune the images a rebuild leaves untagged
LABEL org.ambry-py.image=ambry
# the git revision the image was built from (deploy/build-image.sh sets it)
ARG AMBRY_REVISION=unknown
LABEL org.opencontainers.image.revision=${AMBRY_REVISION}
# the venv's python is a symlink to the base image's python3: same base in both stages
COPY --from=install /opt/ambry /opt/ambry
COPY deploy/healthcheck.sh /opt/ambry/bin/ambry-healthcheck
COPY config/docker.yaml /etc/ambry/docker.yaml
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/ambry --no-create-home \
        --shell /usr/sbin/nologin ambry \
 && mkdir -p /var/lib/ambry \
 && chown ambry:ambry /var/lib/ambry \
 && chmod 0755 /opt/ambry/bin/ambry-healthcheck \
 && chmod 0644 /etc/ambry/docker.yaml
# AMBRY_CONFIG: the --config of every `ambry` command that takes one (`docker exec ...
# ambry admin replication-status` needs no --config; a config mounted elsewhere sets it)
ENV PATH=/opt/ambry/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AMBRY_LOG_LEVEL=INFO \
    AMBRY_CONFIG=/etc/ambry/docker.yaml
# No VOLUME: it gave every container (frontends too, which keep no data) an anonymous volume
# that outlived each recreate. Storage nodes mount a named volume here (docker-compose.yml);
# an empty named volume starts out owned by the ambry user (docker copies the directory's
# ownership into it).
WORKDIR /var/lib/ambry
USER ambry:ambry
# 1174: frontend (Ambry REST API); 6670: node protocol; 6680: node /healthCheck + /metrics
EXPOSE 1174 6670 6680
# SIGTERM = graceful shutdown (drain, close replicas with a snapshot); give it time to finish
STOPSIGNAL SIGTERM
# bash and one HTTP request to the daemon's own /healthCheck: no Python start, no YAML
# (AMBRY_HEALTH_PORT or the daemon's role says the port; see the script)
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=3 \
    CMD ["/opt/ambry/bin/ambry-healthcheck"]
ENTRYPOINT ["/opt/ambry/bin/ambry"]
CMD ["--help"]
