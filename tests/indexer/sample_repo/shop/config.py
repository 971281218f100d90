"""Reading the shop's settings."""

import json
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TIMEOUT_S = 30


@dataclass
class Settings:
    database_url: str
    timeout_s: int = DEFAULT_TIMEOUT_S
    currency: str = "CNY"


def load_config(path: str | Path) -> Settings:
    """加载配置文件，返回设置对象；缺少的字段使用默认值。"""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return Settings(
        database_url=data["database_url"],
        timeout_s=int(data.get("timeout_s", DEFAULT_TIMEOUT_S)),
        currency=data.get("currency", "CNY"),
    )
