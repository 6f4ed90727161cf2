# spotgate serve: the gateway and control plane as one container (Azure Container Apps, AKS, a VM).
# Workers run elsewhere (GPU VMs with worker_image/) and enrol through /fleet/workers.
#   docker build -t spotgate .
#   docker run -p 8000:8000 -e SPOTGATE_ADMIN_KEY=... -e SPOTGATE_FLEET_TOKEN=... spotgate
# Secrets come from the environment or Key Vault at run time; none is baked into the image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SPOTGATE_DATA_DIR=/var/lib/spotgate

# Only what the package build reads; the azure extra brings Cosmos DB, Key Vault, Entra ID and
# scale sets. No vllm extra: inference runs on the workers, not here.
COPY pyproject.toml README.md /src/
COPY functions/spotgate /src/functions/spotgate
RUN pip install --no-cache-dir "/src[azure]" \
    && rm -rf /src \
    && groupadd --system --gid 10001 spotgate \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/spotgate spotgate \
    && install -d -o spotgate -g spotgate -m 0700 /var/lib/spotgate

USER 10001:10001
WORKDIR /var/lib/spotgate

EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=4)"]
STOPSIGNAL SIGTERM
CMD ["spotgate", "serve", "--host", "0.0.0.0", "--port", "8000"]
