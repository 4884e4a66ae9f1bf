# shelfguard orchestration image: Airflow 3.3.2 with the shelfguard package, the DAGs, the
# dbt project, the Great Expectations suites and the governance policy baked in. Every
# Airflow service of docker-compose.yml (api-server, scheduler, dag-processor, triggerer,
# Celery workers, init) runs this one image; see docs/production.md.
#
#   docker build -t shelfguard-airflow:0.1.0 .            (or: docker compose build)
#
# The slim variant of the official image: it carries Airflow core only, so every other
# package comes from constraints.txt, the versions the test suite runs with. The regular
# image preinstalls ~30 providers pinned to Airflow's own constraints, and installing
# shelfguard's pins over them would move dependencies those providers were built against.
FROM apache/airflow:slim-3.3.2-python3.11

# The training package (torch, sentence-transformers) is NOT installed by default: with
# SHELFGUARD_TRAINING_BACKEND=kubernetes, training and bulk embedding run in the training
# image (training/Dockerfile) as pods, and the orchestration side never imports torch.
# Build with INSTALL_TRAINING=true only for the local backend (training as a subprocess
# on the Celery workers) or for `shelfguard search`; TRAINING_INDEX_URL can point pip at
# a CPU-only PyTorch index, e.g. https://download.pytorch.org/whl/cpu.
ARG INSTALL_TRAINING=false
ARG TRAINING_INDEX_URL=

ENV SHELFGUARD_PROJECT_DIR=/opt/shelfguard \
    SHELFGUARD_HOME=/opt/shelfguard-home \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/shelfguard/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/shelfguard/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    AIRFLOW__COSMOS__ENABLE_TELEMETRY=False \
    SCARF_ANALYTICS=false \
    DO_NOT_TRACK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Folders the airflow user (uid 50000, gid 0) writes to. A named volume mounted on one of
# them starts as a copy of it, ownership included.
USER root
RUN install -d -o airflow -g 0 -m 0775 \
        /opt/shelfguard /opt/shelfguard-home /opt/shelfguard-home/landing /opt/airflow/auth
USER airflow
WORKDIR /opt/shelfguard

# Dependencies first, from pyproject.toml's ranges at constraints.txt's exact versions, so
# that this layer is rebuilt only when the pins change. Airflow is named at the image's
# own version so that pip can never up- or downgrade it.
COPY --chown=airflow:0 constraints.txt pyproject.toml README.md ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['production']))" > /tmp/requirements.txt \
    && pip install "apache-airflow==${AIRFLOW_VERSION}" -c constraints.txt -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The project. shelfguard is installed editable from plugins/, the folder Airflow also puts
# on sys.path, so there is exactly one copy of the package and project_root() is this folder.
COPY --chown=airflow:0 plugins ./plugins
COPY --chown=airflow:0 dags ./dags
COPY --chown=airflow:0 dbt_project ./dbt_project
COPY --chown=airflow:0 expectations ./expectations
COPY --chown=airflow:0 governance.yml ./governance.yml
COPY --chown=airflow:0 training ./training
COPY --chown=airflow:0 deploy/airflow-init.sh deploy/governance.production.yml ./deploy/
RUN pip install --no-deps -e . \
    && if [ "${INSTALL_TRAINING}" = "true" ]; then \
        pip install "apache-airflow==${AIRFLOW_VERSION}" -c constraints.txt \
            ${TRAINING_INDEX_URL:+--extra-index-url "${TRAINING_INDEX_URL}"} ./training; \
    fi \
    && python -c "import airflow.providers.celery, shelfguard.cli" \
    && shelfguard --help > /dev/null

# Cosmos renders the dbt task groups from target/manifest.json. `dbt parse` connects to no
# database, so it runs here, offline, for the Postgres target the compose warehouse uses
# (the URL only selects the target; host and credentials are not used while parsing).
ARG DBT_PARSE_WAREHOUSE_URL=postgresql://shelfguard_warehouse@postgres:5432/shelfguard_warehouse
RUN SHELFGUARD_HOME=/tmp/shelfguard-build SHELFGUARD_WAREHOUSE_URL="${DBT_PARSE_WAREHOUSE_URL}" \
        python -c "from shelfguard.config import load_settings; from shelfguard.data.dbt_project import parse_project; parse_project(load_settings())" \
    && rm -rf /tmp/shelfguard-build dbt_project/logs

WORKDIR /opt/airflow
