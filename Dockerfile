# R1 inference server, CPU, slim, non-root.
#   docker build -t r1-serve .
#   docker run --rm -p 8000:8000 -v $PWD/runs:/models:ro r1-serve /models/quickstart/student_kd
# The image holds the package, not models: mount run dirs (or .onnx files) at /models.
# Kubernetes: deploy/k8s/r1-serve.yaml (stable + canary variants, probes, limits).
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OMP_NUM_THREADS=1 MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /app
# CPU wheels of the pinned torch first (the default index would pull the CUDA build, ~5 GB).
COPY constraints.txt ./
RUN pip install --index-url https://download.pytorch.org/whl/cpu \
        "torch==$(sed -n 's/^torch==//p' constraints.txt)" \
        "torchvision==$(sed -n 's/^torchvision==//p' constraints.txt)"
COPY pyproject.toml README.md ./
COPY r1 ./r1
COPY configs ./configs
RUN pip install -c constraints.txt . \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin r1

USER 10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["r1", "serve", "--host", "0.0.0.0", "--port", "8000"]
CMD ["/models/model"]
