"""resolve_import per language, against a made-up repository's paths."""

import pytest

from indexer.imports import resolve_import
from indexer.records import Import

KNOWN = {
    # Python: a package, a src/ layout and a script folder
    "shop/__init__.py", "shop/orders.py", "shop/payments/__init__.py", "shop/payments/gateway.py",
    "src/billing/__init__.py", "src/billing/invoice.py", "scripts/run.py", "scripts/helpers.py",
    # JavaScript / TypeScript
    "web/src/app.ts", "web/src/api.js", "web/src/util/index.ts", "web/src/money.ts", "web/src/Button.tsx",
    # C / C++
    "native/src/ring.c", "native/src/util/log.h", "native/include/ring.h", "native/include/net/socket.hpp", "config.h",
    # Go: module example.com/shop lives in go/
    "go/go.mod", "go/cmd/server/main.go", "go/internal/clock/clock.go", "go/internal/clock/real.go",
    "go/internal/clock/clock_test.go",
    # Rust
    "rust/src/lib.rs", "rust/src/money.rs", "rust/src/ledger/mod.rs", "rust/src/ledger/rounding.rs",
    "rust/src/ledger/audit.rs",
    # Java
    "java/src/main/java/com/acme/App.java", "java/src/main/java/com/acme/model/Order.java",
    "java/src/main/java/com/acme/model/Line.java", "java/src/main/java/com/acme/util/Checks.java",
}

CASES = [
    # language, importing file, import, expected files
    ("python", "shop/orders.py", Import("shop.payments.gateway"), ["shop/payments/gateway.py"]),
    ("python", "shop/orders.py", Import("shop.payments", ("gateway",)), ["shop/payments/gateway.py"]),
    ("python", "shop/orders.py", Import("shop.payments", ("gateway", "Charge")),
     ["shop/payments/__init__.py", "shop/payments/gateway.py"]),
    ("python", "shop/payments/gateway.py", Import("..orders", ("place",)), ["shop/orders.py"]),
    ("python", "shop/payments/gateway.py", Import(".", ("gateway",)), ["shop/payments/gateway.py"]),
    ("python", "shop/payments/gateway.py", Import("..", ("orders",)), ["shop/orders.py"]),
    ("python", "shop/orders.py", Import("...too_far")  , []),
    ("python", "tests/test_invoice.py", Import("billing.invoice", ("Invoice",)), ["src/billing/invoice.py"]),
    ("python", "scripts/run.py", Import("helpers"), ["scripts/helpers.py"]),
    ("python", "shop/orders.py", Import("os.path"), []),
    ("typescript", "web/src/app.ts", Import("./util"), ["web/src/util/index.ts"]),
    ("typescript", "web/src/app.ts", Import("./money.js", ("formatPrice",)), ["web/src/money.ts"]),
    ("typescript", "web/src/app.ts", Import("./api"), ["web/src/api.js"]),
    ("tsx", "web/src/util/index.ts", Import("../Button"), ["web/src/Button.tsx"]),
    ("javascript", "web/src/api.js", Import("react"), []),
    ("javascript", "web/src/api.js", Import("../../../outside"), []),
    ("c", "native/src/ring.c", Import("ring.h"), ["native/include/ring.h"]),
    ("c", "native/src/ring.c", Import("util/log.h"), ["native/src/util/log.h"]),
    ("c", "native/src/ring.c", Import("config.h"), ["config.h"]),
    ("cpp", "native/src/ring.c", Import("net/socket.hpp"), ["native/include/net/socket.hpp"]),
    ("c", "native/src/ring.c", Import("stdio.h"), []),
    ("go", "go/cmd/server/main.go", Import("example.com/shop/internal/clock"),
     ["go/internal/clock/clock.go", "go/internal/clock/real.go"]),
    ("go", "go/cmd/server/main.go", Import("net/http"), []),
    ("go", "go/cmd/server/main.go", Import("github.com/other/lib"), []),
    ("rust", "rust/src/lib.rs", Import("crate::money", ("Money",)), ["rust/src/money.rs"]),
    ("rust", "rust/src/lib.rs", Import("money"), ["rust/src/money.rs"]),  # `mod money;`
    ("rust", "rust/src/ledger/mod.rs", Import("self::rounding", ("to_cents",)), ["rust/src/ledger/rounding.rs"]),
    ("rust", "rust/src/ledger/rounding.rs", Import("super::audit", ("Log",)), ["rust/src/ledger/audit.rs"]),
    ("rust", "rust/src/ledger/rounding.rs", Import("super::super::money", ("Money",)), ["rust/src/money.rs"]),
    ("rust", "rust/src/lib.rs", Import("crate::ledger", ("rounding", "Ledger")),
     ["rust/src/ledger/rounding.rs", "rust/src/ledger/mod.rs"]),
    ("rust", "rust/src/lib.rs", Import("std::collections", ("HashMap",)), []),
    ("java", "java/src/main/java/com/acme/App.java", Import("com.acme.model.Order"),
     ["java/src/main/java/com/acme/model/Order.java"]),
    ("java", "java/src/main/java/com/acme/App.java", Import("com.acme.model", ("*",)),
     ["java/src/main/java/com/acme/model/Line.java", "java/src/main/java/com/acme/model/Order.java"]),
    ("java", "java/src/main/java/com/acme/App.java", Import("com.acme.util.Checks.requirePositive"),
     ["java/src/main/java/com/acme/util/Checks.java"]),
    ("java", "java/src/main/java/com/acme/App.java", Import("java.util.List"), []),
    ("markdown", "README.md", Import("anything"), []),
]


@pytest.mark.parametrize(("language", "from_path", "imp", "expected"), CASES)
def test_resolve_import(language: str, from_path: str, imp: Import, expected: list[str]) -> None:
    assert resolve_import(imp, from_path, language, KNOWN) == expected


def test_folder_index_follows_a_changed_set() -> None:
    known = set(KNOWN)
    imp = Import("example.com/shop/internal/clock")
    assert len(resolve_import(imp, "go/cmd/server/main.go", "go", known)) == 2
    known.add("go/internal/clock/fake.go")
    assert len(resolve_import(imp, "go/cmd/server/main.go", "go", known)) == 3
