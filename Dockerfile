# LVSeg as a Hugging Face Docker Space (also runs anywhere Docker runs).
#
# The Space is described by the README's front matter (sdk: docker,
# app_port: 8501). Build and run locally with:
#     docker build -t lvseg . && docker run --rm -p 8501:8501 lvseg
# then open http://localhost:8501.
#
# Settings (environment variables; set them in the Space's "Variables"):
#   HF_HOME                  Hugging Face cache for weights fetched from the Hub
#                            (sidebar: "Hugging Face Hub"). On a Space with persistent
#                            storage point it at /data/huggingface to keep downloads.
#   HF_TOKEN                 (secret) only needed to push trained weights (private Space,
#                            LVSEG_ALLOW_PUSH=1); never sent on a visitor's behalf.
#   HF_HUB_OFFLINE=1         never contact the Hub; bundled weights still work.
#   LVSEG_SAMPLES            an ACDC-layout folder whose patients are offered as one-click
#                            samples on the Segment page (e.g. /data/samples on persistent
#                            storage). ACDC itself may not be redistributed: ship only data
#                            you are allowed to publish.
#   LVSEG_WEIGHTS_DIR        where bundled weights are looked up (default: weights/).
#   LVSEG_RUNS_DIR           where the Train page keeps its runs (default: runs/).
#   LVSEG_PUBLIC             1 here: a public Space (README, "Deploying publicly"): Hub
#                            fetches never use HF_TOKEN, no training, no push, no server
#                            folder boxes, tighter scan limits, one analysis at a time.
#                            Set 0 only on a private Space.
#   LVSEG_ALLOW_TRAINING     1 lets the Train page start/stop runs (ignored when public).
#   LVSEG_ALLOW_PUSH         1 lets the Train page push to the Hub with HF_TOKEN (ignored
#                            when public).
#   LVSEG_ANALYSIS_SLOTS / LVSEG_ANALYSIS_QUEUE   analyses at once / waiting (1 / 4).
#   LVSEG_MAX_VOXELS, LVSEG_MAX_DATA_MB, LVSEG_MAX_FRAMES, LVSEG_MAX_GRID_VOXELS,
#   LVSEG_MAX_WEIGHTS_MB, LVSEG_HUB_TIMEOUT      limits on untrusted input (README).
#   LVSEG_MAX_UPLOAD_MB      upload limit enforced by the app (default 200); keep it equal
#                            to STREAMLIT_SERVER_MAX_UPLOAD_SIZE (.streamlit/config.toml).
#
# Uploads inside a Space: the app is shown in an iframe on another site, where
# Streamlit's XSRF cookie is not sent back, so every upload fails with
# "AxiosError: Request failed with status code 403" unless XSRF protection is
# off. It is switched off here (and CORS with it, as Streamlit requires) for the
# container only; .streamlit/config.toml keeps it on for local runs.

FROM python:3.11-slim

# libgomp: OpenMP runtime used by torch on the CPU.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

# Spaces run the container as user 1000.
RUN useradd --create-home --uid 1000 user
USER user
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HOME=/home/user/.cache/huggingface \
    LVSEG_RUNS_DIR=/home/user/runs \
    LVSEG_PUBLIC=1 \
    LVSEG_ALLOW_TRAINING=0 \
    STREAMLIT_SERVER_PORT=8501 \
    STREAMLIT_SERVER_ADDRESS=0.0.0.0 \
    STREAMLIT_SERVER_HEADLESS=true \
    STREAMLIT_SERVER_MAX_UPLOAD_SIZE=200 \
    STREAMLIT_SERVER_ENABLE_XSRF_PROTECTION=false \
    STREAMLIT_SERVER_ENABLE_CORS=false \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false \
    STREAMLIT_CLIENT_SHOW_ERROR_DETAILS=none

WORKDIR /home/user/app

# Dependencies first, so that code changes do not reinstall them. The same two
# commands as the README; a CPU-only torch build makes the image much smaller.
COPY --chown=user requirements.txt .
RUN pip install --user torch==2.14.1 torchvision==0.29.1 \
    && pip install --user -r requirements.txt

# The app, the library and the bundled weights (weights/<model>/).
COPY --chown=user . .

EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4)"

CMD ["streamlit", "run", "app.py"]
