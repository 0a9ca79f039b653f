#!/usr/bin/env bash
# A real MLflow tracking server for the test that logs a run to one (training.mlflow),
# in a virtual environment of its own: the server's GraphQL layer (graphene) needs
# python-dateutil < 3 and the kubernetes client >= 3, so they cannot share .venv. The
# trainer itself needs only the client (mlflow-skinny, in the trainer extra).
# .venv/bin/mlflow-server runs `mlflow server` from it.
set -euo pipefail
venv=${1:-.venv}
server_env=.cache/mlflow-server
version=3.17.2
wrapper="$venv/bin/mlflow-server"
if [ -x "$wrapper" ] && "$server_env/bin/python" -c "import mlflow" 2>/dev/null; then exit 0; fi
"$venv/bin/python" -m venv "$server_env"
"$server_env/bin/python" -m pip install -q --upgrade pip
"$server_env/bin/python" -m pip install -q "mlflow==$version"
cat > "$wrapper" <<SH
#!/usr/bin/env bash
exec "$(cd "$server_env" && pwd)/bin/mlflow" server "\$@"
SH
chmod +x "$wrapper"
"$server_env/bin/mlflow" --version
