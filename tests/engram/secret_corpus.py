"""Planted secrets and harmless look-alikes for the redaction gate, generated from a seed.

Every secret has the shape of a real credential and random content: none is a real key.
Each planted text records the exact secret strings in it and the kind the gate must name.
The harmless texts are what a coding assistant sees all day and must keep intact: hashes,
UUIDs, fixtures, checksums, versions, credential-free URLs, code about passwords and tokens,
and placeholders (`<your password>`, `${ENV}`, `os.environ["X"]`, `changeme`).
"""
from __future__ import annotations

import base64
import json
import random
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass

SEED = 20261129
NUM_PER_KIND = 9

ALNUM = string.ascii_letters + string.digits
UPPER_DIGITS = string.ascii_uppercase + string.digits
B64 = ALNUM + "+/"
B64URL = ALNUM + "-_"
HEX = "0123456789abcdef"
PASSWORD_CHARS = ALNUM + "!#%^*-_+=~"
# A generic value containing one of these reads as a placeholder to the gate (by design), so a
# random draw that happens to spell one is drawn again.
_PLACEHOLDER_WORDS = ("example", "fake", "dummy", "sample", "xxxx", "your", "here", "test", "redact",
                      "change", "placeholder", "token", "secret", "password")


@dataclass(frozen=True)
class Planted:
    carrier: str  # chat-en, chat-zh, diff, rules
    text: str
    secrets: tuple[tuple[str, str], ...]  # (kind the gate must name, exact secret string)


@dataclass(frozen=True)
class _Secret:
    secrets: tuple[tuple[str, str], ...]
    inline: str  # how it appears in a sentence
    config: str  # how it appears in a file (may span lines)
    path: str  # the file a diff adds it to


def _draw(rng: random.Random, alphabet: str, n: int) -> str:
    while True:
        value = "".join(rng.choice(alphabet) for _ in range(n))
        lowered = value.lower()
        if (not any(word in lowered for word in _PLACEHOLDER_WORDS)
                and sum(any(c in group for c in value)
                        for group in (string.ascii_lowercase, string.ascii_uppercase, string.digits)) >= 2):
            return value


def _password(rng: random.Random) -> str:
    # Starts with a letter or digit: a leading "$" or "<" reads as a template reference.
    return rng.choice(ALNUM) + _draw(rng, PASSWORD_CHARS, rng.randint(11, 23))


def _pem_body(rng: random.Random, num_bytes: int) -> list[str]:
    encoded = base64.b64encode(rng.randbytes(num_bytes)).decode()
    return [encoded[i:i + 64] for i in range(0, len(encoded), 64)]


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# --- one generator per kind ---------------------------------------------------------------

def _openai(rng: random.Random) -> _Secret:
    style = rng.randrange(3)
    if style == 0:
        key = f"sk-proj-{_draw(rng, B64URL, 58)}T3BlbkFJ{_draw(rng, B64URL, 58)}"
    elif style == 1:
        key = f"sk-{_draw(rng, ALNUM, 20)}T3BlbkFJ{_draw(rng, ALNUM, 20)}"
    else:
        key = f"sk-{_draw(rng, ALNUM, 48)}"
    return _Secret((("openai-api-key", key),), key, f"OPENAI_API_KEY={key}", ".env")


def _anthropic(rng: random.Random) -> _Secret:
    key = f"sk-ant-api03-{_draw(rng, B64URL, 93)}AA"
    return _Secret((("anthropic-api-key", key),), key, f'client = Anthropic(api_key="{key}")', "agent/llm.py")


def _github(rng: random.Random) -> _Secret:
    style = rng.randrange(3)
    if style == 0:
        key = f"ghp_{_draw(rng, ALNUM, 36)}"
    elif style == 1:
        key = f"github_pat_11{_draw(rng, UPPER_DIGITS, 20)}_{_draw(rng, ALNUM, 59)}"
    else:
        key = f"gho_{_draw(rng, ALNUM, 36)}"
    return _Secret((("github-token", key),), key, f"  GITHUB_TOKEN: {key}", ".github/workflows/release.yml")


def _gitlab(rng: random.Random) -> _Secret:
    key = f"glpat-{_draw(rng, B64URL, 20)}"
    return _Secret((("gitlab-token", key),), key, f'git remote set-url origin "https://oauth2:{key}@gitlab.com/acme/api.git"',
                   "scripts/mirror.sh")


def _slack(rng: random.Random) -> _Secret:
    prefix = rng.choice(["xoxb", "xoxp"])
    key = f"{prefix}-{rng.randint(10**10, 10**12)}-{rng.randint(10**12, 10**13)}-{_draw(rng, ALNUM, 24)}"
    return _Secret((("slack-token", key),), key, f'SLACK_BOT_TOKEN = "{key}"', "bot/settings.py")


def _stripe(rng: random.Random) -> _Secret:
    key = f"{rng.choice(['sk', 'rk'])}_live_{_draw(rng, ALNUM, rng.choice([24, 34, 99]))}"
    return _Secret((("stripe-key", key),), key, f"stripe.api_key = '{key}'", "billing/stripe_client.py")


def _aws_access(rng: random.Random) -> _Secret:
    key = "AKIA" + _draw(rng, UPPER_DIGITS, 16)
    return _Secret((("aws-access-key", key),), key, f"aws_access_key_id = {key}", ".aws/credentials")


def _aws_secret(rng: random.Random) -> _Secret:
    key_id, secret = "AKIA" + _draw(rng, UPPER_DIGITS, 16), _draw(rng, B64, 40)
    config = f"[default]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\nregion = cn-north-1"
    return _Secret((("aws-access-key", key_id), ("aws-secret-key", secret)),
                   f"AWS_ACCESS_KEY_ID={key_id} AWS_SECRET_ACCESS_KEY={secret}", config, ".aws/credentials")


def _google(rng: random.Random) -> _Secret:
    key = "AIza" + _draw(rng, B64URL, 35)
    return _Secret((("google-api-key", key),), key,
                   f'<script src="https://maps.googleapis.com/maps/api/js?key={key}&callback=initMap"></script>',
                   "web/index.html")


def _gcp(rng: random.Random) -> _Secret:
    key_id = "".join(rng.choice(HEX) for _ in range(40))
    lines = _pem_body(rng, 1190)
    private_key = "-----BEGIN PRIVATE KEY-----\n" + "\n".join(lines) + "\n-----END PRIVATE KEY-----\n"
    document = {"type": "service_account", "project_id": f"acme-{rng.randint(1000, 9999)}",
                "private_key_id": key_id, "private_key": private_key,
                "client_email": "deployer@acme.iam.gserviceaccount.com", "client_id": str(rng.randint(10**20, 10**21))}
    config = json.dumps(document, indent=2)  # the key's line breaks become the two characters \n
    return _Secret((("gcp-service-account-key", key_id), ("private-key", "\\n".join(lines))),
                   config, config, "deploy/service-account.json")


def _azure(rng: random.Random) -> _Secret:
    key = _draw(rng, B64, 86) + "=="
    config = (f"AZURE_STORAGE_CONNECTION_STRING=DefaultEndpointsProtocol=https;AccountName=acmeassets;"
              f"AccountKey={key};EndpointSuffix=core.chinacloudapi.cn")
    return _Secret((("azure-storage-key", key),), config, config, ".env.production")


def _pem(rng: random.Random) -> _Secret:
    label, size = rng.choice([("RSA PRIVATE KEY", 1190), ("EC PRIVATE KEY", 121), ("OPENSSH PRIVATE KEY", 400),
                              ("PRIVATE KEY", 1216)])
    lines = _pem_body(rng, size)
    block = f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----"
    return _Secret((("private-key", "\n".join(lines)),), block, block, "deploy/id_rsa")


def _jwt(rng: random.Random) -> _Secret:
    header = _b64url(b'{"alg":"HS256","typ":"JWT"}')
    payload = _b64url(json.dumps({"sub": str(rng.randint(10**5, 10**9)), "name": "ops",
                                  "iat": rng.randint(1_600_000_000, 1_800_000_000)}).encode())
    token = f"{header}.{payload}.{_b64url(rng.randbytes(32))}"
    return _Secret((("jwt", token),), token, f"SESSION_COOKIE = '{token}'", "tests/conftest.py")


def _url(rng: random.Random) -> _Secret:
    password = _draw(rng, ALNUM + "!*-_~", rng.randint(12, 24))
    scheme, port, path = rng.choice([("postgres", 5432, "/app"), ("postgresql", 5432, "/orders"),
                                     ("mysql", 3306, "/shop"), ("mongodb+srv", None, "/prod?retryWrites=true"),
                                     ("redis", 6379, "/0"), ("amqp", 5672, "/%2F")])
    host = rng.choice(["db.internal", "10.0.3.17", "cluster0.ab12c.mongodb.net", "rds.amazonaws.com.cn"])
    user = rng.choice(["app", "admin", "svc_orders", ""])
    url = f"{scheme}://{user}:{password}@{host}{':' + str(port) if port else ''}{path}"
    return _Secret((("url-password", password),), url, f'DATABASE_URL = "{url}"', "app/settings.py")


def _password_assignment(rng: random.Random) -> _Secret:
    password = _password(rng)
    config, path = rng.choice([
        (f'  password: "{password}"', "config/database.yml"),
        (f"DB_PASSWORD={password}", ".env"),
        (f'    "password": "{password}",', "config/dev.json"),
        (f'PASSWORD = "{password}"', "app/config.py"),
        (f"const dbPassword = '{password}';", "src/db.ts"),
        (f"    password: {password}", "docker-compose.yml"),
        (f'spring.datasource.password={password}', "src/main/resources/application.properties"),
    ])
    return _Secret((("password", password),), f"password: {password}", config, path)


def _secret_assignment(rng: random.Random) -> _Secret:
    value = _draw(rng, ALNUM + "-_", rng.randint(32, 50))
    config = rng.choice([f'SECRET_KEY = "{value}"', f"CLIENT_SECRET={value}", f'  client_secret: "{value}"',
                         f"JWT_SECRET={value}", f'app.config["SECRET_KEY"] = "{value}"'])
    return _Secret((("secret", value),), config, config, "app/settings.py")


def _token_assignment(rng: random.Random) -> _Secret:
    value = _draw(rng, HEX if rng.random() < 0.5 else ALNUM, 40)
    config = rng.choice([f"SENTRY_AUTH_TOKEN={value}", f'auth_token = "{value}"', f'  accessToken: "{value}",',
                         f"export CI_DEPLOY_TOKEN={value}"])
    return _Secret((("token", value),), config, config, "ci/deploy.sh")


def _api_key_assignment(rng: random.Random) -> _Secret:
    value = _draw(rng, ALNUM, 32)
    config = rng.choice([f'DEEPSEEK_API_KEY = "{value}"', f"MAPBOX_API_KEY={value}", f'  apiKey: "{value}",',
                         f'headers["X-Api-Key"] = "{value}"', f"api_key: {value}"])
    return _Secret((("api-key", value),), config, config, "services/clients.py")


def _alibaba(rng: random.Random) -> _Secret:
    key = "LTAI5t" + _draw(rng, ALNUM, 18)
    return _Secret((("alibaba-access-key", key),), key, f"ALIBABA_CLOUD_ACCESS_KEY_ID={key}", "deploy/oss.env")


def _tencent(rng: random.Random) -> _Secret:
    key = "AKID" + _draw(rng, ALNUM, 32)
    return _Secret((("tencent-secret-id", key),), key, f'cred = credential.Credential("{key}", secret_key)',
                   "infra/cos_upload.py")


def _npm(rng: random.Random) -> _Secret:
    key = "npm_" + _draw(rng, ALNUM, 36)
    return _Secret((("npm-token", key),), key, f"//registry.npmjs.org/:_authToken={key}", ".npmrc")


def _pypi(rng: random.Random) -> _Secret:
    key = "pypi-AgEIcHlwaS5vcmc" + _draw(rng, B64URL, 160)
    return _Secret((("pypi-token", key),), key, f"[pypi]\nusername = __token__\npassword = {key}", ".pypirc")


def _huggingface(rng: random.Random) -> _Secret:
    key = "hf_" + _draw(rng, string.ascii_letters, 34)
    return _Secret((("huggingface-token", key),), key, f'login(token="{key}")', "train/upload.py")


def _twilio(rng: random.Random) -> _Secret:
    key = "SK" + "".join(rng.choice(HEX) for _ in range(32))
    return _Secret((("twilio-key", key),), key, f"TWILIO_API_KEY_SID={key}", ".env")


def _sendgrid(rng: random.Random) -> _Secret:
    key = f"SG.{_draw(rng, B64URL, 22)}.{_draw(rng, B64URL, 43)}"
    return _Secret((("sendgrid-key", key),), key, f"sg = SendGridAPIClient('{key}')", "mail/send.py")


def _discord(rng: random.Random) -> _Secret:
    key = f"M{_draw(rng, B64URL, 25)}.{_draw(rng, B64URL, 6)}.{_draw(rng, B64URL, 38)}"
    return _Secret((("discord-bot-token", key),), key, f"bot.run('{key}')", "bot/main.py")


def _telegram(rng: random.Random) -> _Secret:
    key = f"{rng.randint(10**8, 10**10 - 1)}:AA{_draw(rng, B64URL, 33)}"
    return _Secret((("telegram-bot-token", key),), key, f'TELEGRAM_BOT_TOKEN: "{key}"', "deploy/values.yaml")


def _bearer(rng: random.Random) -> _Secret:
    token = _draw(rng, ALNUM + "-._~", 44)
    config = f'curl -H "Authorization: Bearer {token}" https://api.internal.acme.cn/v2/jobs'
    return _Secret((("bearer-token", token),), config, config, "scripts/smoke.sh")


KINDS: dict[str, Callable[[random.Random], _Secret]] = {
    "openai": _openai, "anthropic": _anthropic, "github": _github, "gitlab": _gitlab, "slack": _slack,
    "stripe": _stripe, "aws-access": _aws_access, "aws-secret": _aws_secret, "google": _google, "gcp": _gcp,
    "azure": _azure, "pem": _pem, "jwt": _jwt, "url": _url, "password": _password_assignment,
    "secret": _secret_assignment, "token": _token_assignment, "api-key": _api_key_assignment,
    "alibaba": _alibaba, "tencent": _tencent, "npm": _npm, "pypi": _pypi, "huggingface": _huggingface,
    "twilio": _twilio, "sendgrid": _sendgrid, "discord": _discord, "telegram": _telegram, "bearer": _bearer,
}


# --- carriers -----------------------------------------------------------------------------

_CHAT_EN = (
    "I keep getting 401 Unauthorized. The key is {inline} and it worked yesterday, any idea?",
    "Here's my setup:\n```\n{config}\n```\nWhy does the client still say the credentials are invalid?",
    "quick q: is it ok to hardcode {inline} for now? I'll move it to the vault later",
)
_CHAT_ZH = (
    "我的 key 是 {inline} 帮我看看为什么报错",
    "部署的时候报错了，配置如下：\n```\n{config}\n```\n哪里不对？",
    "用这个试试：{inline}，还是返回 403，是不是权限没开？",
)
_DIFF = """diff --git a/{path} b/{path}
index {old}..{new} 100644
--- a/{path}
+++ b/{path}
@@ -{line},6 +{line},{count} @@
 # settings for the {env} environment
 LOG_LEVEL=info
{added}
 TIMEOUT_SECONDS=30
"""
_RULES = (
    ("# AGENTS.md\n\n## Running the integration tests\n\nThe tests talk to staging. Use these credentials:\n\n"
     "```\n{config}\n```\n\nNever run them against production.\n"),
    ("---\ndescription: How we call external services\nglobs: [\"services/**/*.py\"]\nalwaysApply: false\n---\n\n"
     "- Read credentials from the environment, e.g.\n\n```\n{config}\n```\n- Retry 3 times with backoff.\n"),
    "# .cursor/rules/deploy.mdc\n\n部署规范：\n\n1. 先跑 `make test`\n2. 配置示例（不要提交到仓库）：\n\n```\n{config}\n```\n",
)


def _diff(rng: random.Random, secret: _Secret) -> str:
    added = "\n".join("+" + line for line in secret.config.split("\n"))
    return _DIFF.format(path=secret.path, old="".join(rng.choice(HEX) for _ in range(7)),
                        new="".join(rng.choice(HEX) for _ in range(7)), line=rng.randint(1, 80),
                        count=6 + secret.config.count("\n") + 1, env=rng.choice(["staging", "prod", "dev"]),
                        added=added)


def planted_corpus(seed: int = SEED) -> list[Planted]:
    rng = random.Random(seed)
    corpus = []
    for make in KINDS.values():
        for i in range(NUM_PER_KIND):
            secret = make(rng)
            carrier = ("chat-en", "chat-zh", "diff", "rules")[i % 4]
            if carrier == "chat-en":
                text = rng.choice(_CHAT_EN).format(inline=secret.inline, config=secret.config)
            elif carrier == "chat-zh":
                text = rng.choice(_CHAT_ZH).format(inline=secret.inline, config=secret.config)
            elif carrier == "diff":
                text = _diff(rng, secret)
            else:
                text = rng.choice(_RULES).format(config=secret.config)
            secrets = secret.secrets
            if carrier == "diff":  # every added line starts with "+", inside a PEM block too
                secrets = tuple((kind, value.replace("\n", "\n+")) for kind, value in secrets)
            corpus.append(Planted(carrier, text, secrets))
    return corpus


# --- harmless texts -------------------------------------------------------------------------

def _hex(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(HEX) for _ in range(n))


def _fixture(rng: random.Random) -> str:
    magic = rng.choice([b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"GIF89a", b"\xff\xd8\xff\xe0\x00\x10JFIF",
                        b"%PDF-1.7\n", b"PK\x03\x04\x14\x00"])
    return base64.b64encode(magic + rng.randbytes(rng.randint(30, 300))).decode()


def _version(rng: random.Random) -> str:
    return f"{rng.randint(0, 12)}.{rng.randint(0, 30)}.{rng.randint(0, 40)}"


def _word(rng: random.Random) -> str:
    return rng.choice(["orders", "billing", "auth", "search", "index", "payments", "users", "cache", "gateway"])


_HARMLESS: tuple[Callable[[random.Random], str], ...] = (
    lambda r: f"Fixed in commit {_hex(r, 7)}; see {_hex(r, 40)} for the original change.",
    lambda r: f"commit {_hex(r, 40)}\nAuthor: Li Wei <li.wei@acme.cn>\nDate:   Mon Nov 2 10:{r.randint(10, 59)}:00 2026 +0800\n\n    fix({_word(r)}): handle empty cart\n",
    lambda r: f"git revert {_hex(r, 40)}\ngit cherry-pick {_hex(r, 7)}..{_hex(r, 7)}",
    lambda r: f"请帮我看看 commit {_hex(r, 7)} 为什么让测试失败了，之前 {_hex(r, 7)} 还是好的",
    lambda r: f'request_id = "{uuid.UUID(int=r.getrandbits(128), version=4)}"',
    lambda r: f"user {uuid.UUID(int=r.getrandbits(128), version=4)} could not log in after the migration",
    lambda r: f'TEST_PNG = "{_fixture(r)}"',
    lambda r: f'FIXTURE = base64.b64decode(\n    "{_fixture(r)}"\n)',
    lambda r: f'const avatar = "data:image/png;base64,{_fixture(r)}";',
    lambda r: f'[[package]]\nname = "{_word(r)}-utils"\nversion = "{_version(r)}"\nfiles = [\n    {{file = "{_word(r)}_utils-{_version(r)}-py3-none-any.whl", hash = "sha256:{_hex(r, 64)}"}},\n]',
    lambda r: f"requests=={_version(r)} \\\n    --hash=sha256:{_hex(r, 64)} \\\n    --hash=sha256:{_hex(r, 64)}",
    lambda r: f'    "node_modules/{_word(r)}": {{\n      "version": "{_version(r)}",\n      "resolved": "https://registry.npmjs.org/{_word(r)}/-/{_word(r)}-{_version(r)}.tgz",\n      "integrity": "sha512-{base64.b64encode(r.randbytes(64)).decode()}"\n    }},',
    lambda r: f'[[package]]\nname = "serde"\nversion = "{_version(r)}"\nsource = "registry+https://github.com/rust-lang/crates.io-index"\nchecksum = "{_hex(r, 64)}"',
    lambda r: f"github.com/{_word(r)}/{_word(r)} v{_version(r)} h1:{base64.b64encode(r.randbytes(32)).decode()}",
    lambda r: f"FROM python:3.11-slim@sha256:{_hex(r, 64)}",
    lambda r: f"Bump version to {_version(r)} and update the changelog (was {_version(r)}-rc.{r.randint(1, 5)})",
    lambda r: f'{{"name": "zhiyin-ext", "version": "{_version(r)}", "engines": {{"vscode": "^1.{r.randint(80, 99)}.0"}}}}',
    lambda r: f"See https://github.com/acme/{_word(r)}/pull/{r.randint(1, 9999)} and https://docs.python.org/3/library/secrets.html#secrets.token_hex",
    lambda r: f"DATABASE_URL=postgres://db.internal:5432/{_word(r)}\nREDIS_URL=redis://cache:6379/{r.randint(0, 15)}",
    lambda r: f"curl -s 'https://api.acme.cn/v1/{_word(r)}?page={r.randint(1, 9)}&token_type=bearer&per_page=50'",
    lambda r: "password_field = forms.CharField(widget=forms.PasswordInput, min_length=12)",
    lambda r: f"token_count = len(tokenizer.encode(prompt))\nif token_count > {r.choice([2048, 4096, 8192])}:\n    raise ContextTooLong(token_count)",
    lambda r: f"secret_santa = assign_pairs(people, seed={r.randint(1, 99)})",
    lambda r: 'api_key_header = "X-API-Key"\nauth_scheme = "Bearer"',
    lambda r: f"max_tokens = {r.choice([256, 512, 1024])}\nmax_new_tokens = {r.choice([64, 128])}",
    lambda r: 'def check_password(password: str, password_hash: str) -> bool:\n    return bcrypt.checkpw(password.encode(), password_hash.encode())',
    lambda r: 'password = getpass.getpass("数据库密码: ")',
    lambda r: f'token = os.environ["{_word(r).upper()}_TOKEN"]',
    lambda r: 'api_key = os.getenv("OPENAI_API_KEY")\nif not api_key:\n    raise SystemExit("set OPENAI_API_KEY")',
    lambda r: "const token = process.env.API_TOKEN;\nconst secret = process.env.CLIENT_SECRET ?? '';",
    lambda r: f"    environment:\n      POSTGRES_PASSWORD: ${{POSTGRES_PASSWORD}}\n      {_word(r).upper()}_TOKEN: ${{{{ secrets.{_word(r).upper()}_TOKEN }}}}",
    lambda r: 'password = "<your password>"\napi_key = "<YOUR_API_KEY>"',
    lambda r: f"API_KEY=changeme\nSECRET_KEY=change-me-{r.randint(1, 9)}\nDB_PASSWORD=",
    lambda r: "OPENAI_API_KEY=sk-...\nANTHROPIC_API_KEY=your-anthropic-key-here",
    lambda r: 'SECRET_KEY = "{{ secret_key }}"\npassword: "********"',
    lambda r: f"token = None\nsecret = self.vault.read('{_word(r)}/db')\npassword = kwargs.get('password')",
    lambda r: 'headers = {"Authorization": f"Bearer {token}"}',
    lambda r: 'curl -H "Authorization: Bearer $GITHUB_TOKEN" https://api.github.com/user',
    lambda r: "conn = psycopg.connect(host=host, user=user, password=db_password, dbname=name)",
    lambda r: "interface LoginForm {\n  email: string;\n  password: string;\n  rememberMe: boolean;\n}",
    lambda r: 'passwordInput.value = "";\nconst tokenizer = new Tokenizer(vocab);',
    lambda r: 'tokenizer.add_special_tokens({"pad_token": "[PAD]", "mask_token": "[MASK]"})\neos_token = "<|endoftext|>"',
    lambda r: f"# 密码长度至少 {r.choice([8, 10, 12])} 位，token 有效期 {r.choice([15, 30, 60])} 分钟\nPASSWORD_MIN_LENGTH = {r.choice([8, 10, 12])}",
    lambda r: f"版本升级到 {_version(r)} 之后，{_word(r)} 模块的缓存命中率从 {r.randint(40, 60)}% 提到 {r.randint(70, 95)}%",
    lambda r: f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{base64.b64encode(r.randbytes(32)).decode()[:43]} li.wei@laptop",
    lambda r: "-----BEGIN CERTIFICATE-----\n" + "\n".join(_pem_body(r, 600)) + "\n-----END CERTIFICATE-----",
    lambda r: "-----BEGIN PUBLIC KEY-----\n" + "\n".join(_pem_body(r, 294)) + "\n-----END PUBLIC KEY-----",
    lambda r: f"2026-11-29T10:{r.randint(10, 59)}:03Z INFO server listening on 0.0.0.0:{r.randint(8000, 9000)} (pid {r.randint(1000, 99999)})",
    lambda r: f"cache_key = f\"{{user_id}}:{{{_word(r)}_id}}\"\nprimary_key = \"id\"\nsort_key = \"created_at\"",
    lambda r: f"- Use `secrets.token_urlsafe(32)` for reset tokens; never log the token itself.\n- Rotate keys every {r.choice([30, 60, 90])} days.",
    lambda r: "for token in tokens:\n    if token == \"EOF\":\n        break\n    token_ids.append(vocab[token])",
    lambda r: f'password_hash = "$2b$12${base64.b64encode(r.randbytes(40)).decode()[:53]}"',
    lambda r: "const secretKey = crypto.randomBytes(32);\nlocalStorage.setItem(\"token\", response.data.token);",
    lambda r: f"spec:\n  tls:\n    - secretName: {_word(r)}-tls\n  env:\n    - name: DB_PASSWORD\n      valueFrom:\n        secretKeyRef:\n          name: {_word(r)}-db\n          key: password",
    lambda r: '{\n  "bos_token": "<s>",\n  "eos_token": "</s>",\n  "unk_token": "<unk>",\n  "model_max_length": 8192\n}',
    lambda r: '<input type="password" name="password" placeholder="Password" autocomplete="current-password">',
    lambda r: "token, err := auth.NewToken(ctx, claims)\nsecret := os.Getenv(\"SIGNING_SECRET\")",
    lambda r: f"def login(username: str, password: str) -> Token:\n    \"\"\"Log in.\n\n    Args:\n        username: The account name.\n        password: Password, checked against the {_word(r)} store.\n        access_token: Access token from the OAuth flow, if any.\n    \"\"\"",
    lambda r: f"2026-11-29 10:{r.randint(10, 59)}:01 INFO auth: token refreshed for user {r.randint(1, 999)} (expires_in=3600)",
    lambda r: "git clone git@github.com:acme/zhiyin.git\ngit clone https://li.wei@git.acme.cn/infra/deploy.git",
    lambda r: f'"dependencies": {{\n  "@types/node": "^20.{r.randint(1, 19)}.{r.randint(0, 9)}",\n  "tokenizers": "{_version(r)}"\n}}',
    lambda r: f"X-Hub-Signature-256: sha256={_hex(r, 64)}",
    lambda r: 'const [password, setPassword] = useState("");\nconst [token, setToken] = useState<string | null>(null);',
    lambda r: "token 是什么意思？大模型里的 token 和登录用的 token 不是一回事吧",
    lambda r: f"密码：请在「设置 → 安全」里修改，旧密码输错 {r.randint(3, 5)} 次会锁定账户",
    lambda r: "Set `OPENAI_API_KEY` in your environment, or pass `api_key=` to the client.",
)


def harmless_corpus(seed: int = SEED, per_template: int = 7) -> list[tuple[str, str]]:
    """(label, text) pairs; the label names the template, for failure reports."""
    rng = random.Random(seed + 1)
    return [(f"harmless-{t:02d}-{i}", make(rng))
            for t, make in enumerate(_HARMLESS) for i in range(per_template)]
