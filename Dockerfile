# clipdet on the official PyTorch CUDA runtime, run as a non-root user. One volume, /cache,
# holds the detectors' weights (downloaded there on first use) and the Hugging Face hub cache
# (the CLIP backbone), so they are fetched once. PyAV (the [video] extra) is installed for
# videos:
#   docker build -t clipdet .
#   docker run --gpus all -v clipdet-cache:/cache -v "$PWD/data:/data" clipdet \
#       --in_csv /data/list.csv --out_csv /data/results.csv
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ENV CLIPDET_WEIGHTS_DIR=/cache/weights \
    HF_HOME=/cache/huggingface \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt "av>=14" \
    && useradd --create-home --uid 1000 clipdet \
    && mkdir -p /cache/weights /cache/huggingface \
    && chown -R clipdet /cache
COPY clipdet/ clipdet/
COPY networks/ networks/
COPY configs/ configs/
COPY weights/ weights/
COPY main.py compute_metrics.py train.py launder.py split.py reproduce.py report.py ./
COPY data/download.py data/commercial_tools.csv data/synthwildx.csv data/

USER 1000
VOLUME ["/cache"]
ENTRYPOINT ["python", "main.py"]
