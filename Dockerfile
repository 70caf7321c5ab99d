# syntax=docker/dockerfile:1
# originshield: build a wheel, install it with its dependencies into a slim runtime.
# libvips comes inside the pyvips-binary wheel, so the runtime needs no system packages.

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && pip wheel --no-cache-dir --wheel-dir /wheels /wheels/originshield-*.whl

FROM python:3.11-slim-bookworm AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="originshield" \
      org.opencontainers.image.description="Origin shield for product images: signed URLs, B2/S3 originals, libvips transforms, CDN-correct caching" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="https://github.com/originshield/originshield" \
      org.opencontainers.image.version="${VERSION}"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TMPDIR=/tmp \
    ORIGINSHIELD_CONFIG=/etc/originshield/originshield.toml
COPY --from=build /wheels /wheels
# Installed from the wheels built above only (no index), then the wheels are dropped.
RUN pip install --no-cache-dir --no-index --find-links=/wheels "originshield==${VERSION}" \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin originshield
COPY config/originshield.toml config/cloudflare-ips.txt /etc/originshield/
USER 10001:10001
EXPOSE 8080 9090
# Works with a read-only root filesystem: the only writes go to /tmp (mount a tmpfs there).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["originshield", "healthcheck"]
ENTRYPOINT ["originshield"]
CMD ["serve", "--config", "/etc/originshield/originshield.toml"]
