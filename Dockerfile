# One image for both daemons of Ambry-py: `ambry server --node ID` and `ambry frontend
# --datacenter DC` (docker-compose.yml runs 2 datacenters x 3 storage nodes + one frontend per
# datacenter from it).
#
# Build it with deploy/build-image.sh, which first builds the wheels of ambry (with its C
# extension) and of its dependencies on the host into build/docker-wheels/: the image installs
# them offline (pip --no-index), so the build needs no network and no compiler. The base is
# the official python:3.11-slim, or a local image tagged the same (deploy/build-image.sh makes
# one with debootstrap where no registry is reachable); either way the wheels must be cp311.
FROM python:3.11-slim AS install
# lets deploy/build-image.sh prune this stage's leftover image (legacy builder)
LABEL org.ambry-py.stage=install
COPY build/docker-wheels/ /wheels/
RUN python3 -m venv /opt/ambry \
 && /opt/ambry/bin/pip install --no-index --find-links /wheels --no-cache-dir \
        --disable-pip-version-check ambry \
 && /opt/ambry/bin/python -c "import ambry.native as n; assert n.implementation == 'c', n.implementation"

FROM python:3.11-slim
# lets deploy/build-image.sh prune the images a rebuild leaves untagged
LABEL org.ambry-py.image=ambry
# the venv's python is a symlink to the base image's python3: same base in both stages
COPY --from=install /opt/ambry /opt/ambry
COPY deploy/healthcheck.py /opt/ambry/bin/ambry-healthcheck
COPY config/docker.yaml /etc/ambry/docker.yaml
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/ambry --no-create-home \
        --shell /usr/sbin/nologin ambry \
 && mkdir -p /var/lib/ambry \
 && chown ambry:ambry /var/lib/ambry \
 && chmod 0755 /opt/ambry/bin/ambry-healthcheck \
 && chmod 0644 /etc/ambry/docker.yaml
ENV PATH=/opt/ambry/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AMBRY_LOG_LEVEL=INFO
# a named volume mounted here starts out owned by the ambry user (docker copies the
# directory's ownership into an empty volume)
VOLUME ["/var/lib/ambry"]
WORKDIR /var/lib/ambry
USER ambry:ambry
# 1174: frontend (Ambry REST API); 6670: node protocol; 6680: node /healthCheck + /metrics
EXPOSE 1174 6670 6680
# SIGTERM = graceful shutdown (drain, close replicas with a snapshot); give it time to finish
STOPSIGNAL SIGTERM
# finds the daemon's own /healthCheck from its command line and the config (see the script)
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=3 \
    CMD ["/opt/ambry/bin/python", "/opt/ambry/bin/ambry-healthcheck"]
ENTRYPOINT ["/opt/ambry/bin/ambry"]
CMD ["--help"]
