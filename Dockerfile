# registryd as a container image, a drop-in for registry:2:
#   docker build -t registryd .
#   docker run -d -p 5000:5000 -v registry-data:/var/lib/registry registryd
# Configure it with REGISTRY_* environment variables (as registry:2) or a
# file mounted on /etc/registryd/config.yml.  BASE names the base image: any
# Debian bookworm (tests build one with mmdebstrap from the local mirror).
ARG BASE=debian:bookworm-slim
FROM ${BASE}

# pip trusts the system's CA bundle (ca-certificates, plus any CA the base
# image adds in /usr/local/share/ca-certificates), not only its own.
ARG PIP_CERT=/etc/ssl/certs/ca-certificates.crt

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# Python from Debian, registryd's dependencies in a venv; a system user
# that owns the data directory and nothing else.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/registryd \
 && useradd --system --uid 999 --user-group --home-dir /var/lib/registry \
        --shell /usr/sbin/nologin registryd \
 && install -d -o registryd -g registryd -m 0750 /var/lib/registry \
 && install -d -m 0755 /etc/registryd

COPY . /tmp/registryd-source
RUN /opt/registryd/bin/pip install /tmp/registryd-source \
 && install -m 0644 /tmp/registryd-source/docker/config.yml /etc/registryd/config.yml \
 && install -m 0644 /tmp/registryd-source/docker/healthcheck.py /opt/registryd/healthcheck.py \
 && rm -rf /tmp/registryd-source \
 && /opt/registryd/bin/registryd check-config --quiet /etc/registryd/config.yml

ENV PATH=/opt/registryd/bin:$PATH
USER registryd
WORKDIR /var/lib/registry
VOLUME /var/lib/registry
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s --retries=3 \
    CMD ["/opt/registryd/bin/python", "/opt/registryd/healthcheck.py"]
CMD ["registryd", "serve", "--config", "/etc/registryd/config.yml"]
