# wasend-supervisor as a container (a sidecar beside the application that sends messages).
#
#   docker build -t wasend-supervisor .
#   docker run --read-only --tmpfs /tmp -v wasend-state:/var/lib/wasend-supervisor \
#       -e WASEND_API_KEY=... wasend-supervisor
#
# Two stages: the first builds a venv with the pinned runtime dependency set
# (constraints.txt, no extras); the second is the same slim base with only that venv.
# It runs as uid 10001 and writes only to /var/lib/wasend-supervisor (state) and nothing
# else, so a read-only root filesystem works. docs/deployment.md says how to run it.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY supervisor ./supervisor
RUN python -m venv /opt/wasend-supervisor \
    && /opt/wasend-supervisor/bin/pip install --no-cache-dir -c constraints.txt '.[alerts,web,postgres]' \
    && /opt/wasend-supervisor/bin/pip uninstall --yes pip
COPY deploy/docker/healthcheck.py /opt/wasend-supervisor/healthcheck.py

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="wasend-supervisor" \
      org.opencontainers.image.description="Keeps hosted WASend WhatsApp sessions alive"
RUN groupadd --system --gid 10001 wasend \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin wasend \
    && install --directory --owner=10001 --group=10001 --mode=0700 /var/lib/wasend-supervisor
COPY --from=build /opt/wasend-supervisor /opt/wasend-supervisor
ENV PATH=/opt/wasend-supervisor/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    WASEND_SUPERVISOR_LOG_FORMAT=json \
    WASEND_SUPERVISOR_HTTP_LISTEN=0.0.0.0:9187 \
    WASEND_SUPERVISOR_STATE_PATH=/var/lib/wasend-supervisor/state.db
VOLUME ["/var/lib/wasend-supervisor"]
USER 10001:10001
WORKDIR /var/lib/wasend-supervisor
EXPOSE 9187
# Liveness only: /livez never depends on the WASend API, so an API outage does not make
# the container unhealthy. No curl in the image: a few lines of Python's urllib.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/opt/wasend-supervisor/bin/python", "/opt/wasend-supervisor/healthcheck.py"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["wasend-supervisor"]
CMD ["run"]
