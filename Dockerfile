# clipdet on the official PyTorch CUDA runtime. Weights live in a volume:
#   docker build -t clipdet .
#   docker run --gpus all -v "$PWD/weights:/app/weights" -v "$PWD/data:/data" \
#       -v "$HOME/.cache/huggingface:/root/.cache/huggingface" clipdet \
#       --in_csv /data/list.csv --out_csv /data/results.csv
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY clipdet/ clipdet/
COPY networks/ networks/
COPY configs/ configs/
COPY weights/ weights/
COPY main.py compute_metrics.py train.py launder.py split.py reproduce.py report.py ./
COPY data/download.py data/commercial_tools.csv data/synthwildx.csv data/

VOLUME ["/app/weights"]
ENTRYPOINT ["python", "main.py"]
