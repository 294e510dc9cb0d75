# registryd as a container image, a drop-in for registry:2:
#   docker build -t registryd .
#   docker run -d -p 5000:5000 -v registry-data:/var/lib/registry registryd
# Configure it with REGISTRY_* environment variables (as registry:2) or a
# file mounted on /etc/registryd/config.yml.  BASE names the base image: any
# Debian bookworm (the tests build one with mmdebstrap from a local mirror).
#
# Few steps, metadata first: with some storage drivers (vfs) every step
# copies the whole file system, so this order keeps a build quick.
ARG BASE=debian:bookworm-slim
FROM ${BASE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/registryd/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Relative paths of the configuration (notification journals, the manhole's
# host key) land next to the data.
WORKDIR /var/lib/registry
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s --retries=3 \
    CMD ["/opt/registryd/bin/python", "/opt/registryd/healthcheck.py"]
CMD ["registryd", "serve", "--config", "/etc/registryd/config.yml"]

# Python from Debian, registryd and its dependencies in a venv (pip trusts
# the system's CA bundle, so a CA the base image adds is honoured), a system
# user that owns the data directory and nothing else; the configuration is
# checked as that user would run it.
COPY . /tmp/registryd-source
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/registryd \
 && PIP_CERT=/etc/ssl/certs/ca-certificates.crt /opt/registryd/bin/pip install /tmp/registryd-source \
 && install -d -m 0755 /etc/registryd \
 && install -m 0644 /tmp/registryd-source/docker/config.yml /etc/registryd/config.yml \
 && install -m 0644 /tmp/registryd-source/docker/healthcheck.py /opt/registryd/healthcheck.py \
 && rm -rf /tmp/registryd-source \
 && useradd --system --uid 999 --user-group --home-dir /var/lib/registry \
        --shell /usr/sbin/nologin registryd \
 && install -d -o registryd -g registryd -m 0750 /var/lib/registry \
 && registryd check-config --quiet /etc/registryd/config.yml

VOLUME /var/lib/registry
USER registryd
