"""The infrastructure template (infra/, azure.yaml) against the code and the README.

Bicep cannot be compiled here (no Bicep CLI, no Azure): these tests read the template
as text and check what would otherwise only fail in Azure. Every app setting it sets is
one the code reads; every setting the code reads is set, or documented as optional;
no secret is in it; the roles it assigns are named as README names them; its containers
are the app's; the blob trigger's Event Grid subscription names the real function.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from shared import layout
from shared.events import EVENTS

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
TEMPLATE = (INFRA / "resources.bicep").read_text("utf-8")
MAIN = (INFRA / "main.bicep").read_text("utf-8")
README = (REPO / "README.md").read_text("utf-8")
README_WORDS = " ".join(README.split())  # names broken across lines read whole
POSTDEPLOY = (INFRA / "scripts" / "postdeploy.sh").read_text("utf-8")
# Set for the Functions host itself, not read by the app's code.
HOST = ("AzureWebJobsStorage__", "APPLICATIONINSIGHTS_", "FUNCTIONS_")
# Read by the code but only ever used off Azure (documented in README as such).
LOCAL_ONLY = {"TR_LOCAL_STORE", "TR_CONNECTION_STRING"}
# The built-in roles (learn.microsoft.com/azure/role-based-access-control/built-in-roles).
BUILT_IN = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
    "f6c7c914-8db3-469d-8ca1-694a8f32e121": "AzureML Data Scientist",
}


def template_settings() -> set[str]:
    return set(re.findall(r"name: '([A-Za-z_]+)'(?:,|\n)\s*value:", TEMPLATE))


def code_settings() -> set[str]:
    """App setting names the package and the app read (string literals of their shape)."""
    found: set[str] = set()
    for path in [REPO / "function_app.py", *sorted((REPO / "shared").rglob("*.py"))]:
        text = path.read_text("utf-8")
        found |= set(re.findall(r"[\"'%]((?:AZURE_ML|RETRAIN|TR)_[A-Z_]+)[\"'%]", text))
    return found - {"TR_"}


def test_every_setting_the_template_sets_is_read_by_the_code() -> None:
    factory = (REPO / "shared" / "storage" / "factory.py").read_text("utf-8")
    azure = (REPO / "shared" / "storage" / "azure.py").read_text("utf-8")
    for name in template_settings():
        if name.startswith(HOST):
            continue
        if name.startswith("DataStorage__"):
            suffix = name.removeprefix("DataStorage")
            assert f"{{name}}{suffix}" in factory + azure, name  # read for the connection
            continue
        assert name in code_settings(), f"the template sets {name}, which nothing reads"


def test_every_setting_the_code_reads_is_set_or_documented_as_optional(
    function_bindings: dict[str, list[dict[str, object]]],
) -> None:
    settings = template_settings()
    assert code_settings() >= {"RETRAIN_SCHEDULE", "RETRAIN_RUNNER", "AZURE_ML_COMPUTE"}
    for name in code_settings() - settings:
        rows = [line for line in README.splitlines() if line.startswith("|")]
        row = next((line for line in rows if f"`{name}`" in line), None)
        assert row is not None, f"{name}: not in README's settings"
        assert name in LOCAL_ONLY or re.search(r"\| [^|]+ \|\s*$", row), row  # has a default
    # What has no default is set: the timer's schedule and the data storage (the blob
    # trigger's connection, by identity).
    assert {"RETRAIN_SCHEDULE", "DataStorage__blobServiceUri", "DataStorage__credential"} <= (
        settings
    )
    (trigger,) = function_bindings["extract_dropped"]
    assert trigger["connection"] == "DataStorage"


def test_no_secret_is_in_the_template() -> None:
    every = "\n".join(
        p.read_text("utf-8") for p in [*INFRA.rglob("*"), REPO / "azure.yaml"] if p.is_file()
    )
    for secret in ("AccountKey", "listKeys(", "primaryKey", "SharedAccessSignature", "password"):
        assert secret not in every, secret
    assert "allowSharedKeyAccess: false" in TEMPLATE
    assert "DisableLocalAuth: true" in TEMPLATE


def test_the_roles_are_the_built_in_ones_and_named_as_in_the_readme() -> None:
    declared = dict(re.findall(r"'([0-9a-f-]{36})' // ([^\n]+)", TEMPLATE))
    assert declared == BUILT_IN  # each id is the role its comment names
    used = set(re.findall(r"roleDefinitions', roles\.(\w+)\)", TEMPLATE))
    names = dict(re.findall(r"(\w+): '([0-9a-f-]{36})'", TEMPLATE))
    for key in used:
        assert BUILT_IN[names[key]] in README_WORDS, BUILT_IN[names[key]]
    assert used == set(names)  # no role declared and never assigned


def test_the_containers_are_the_app_s() -> None:
    containers = set(re.findall(r"^  '([a-z-]+)'$", TEMPLATE, flags=re.MULTILINE))
    pointers = (
        layout.EXTRACTS_POINTER,
        layout.MODELS_POINTER,
        layout.RECOMMENDATIONS_POINTER,
        layout.RETRAIN_LOCK,
        layout.FIRST_SEEN,
        EVENTS,
    )
    used = {layout.DROP_CONTAINER, layout.REJECTED_CONTAINER} | {p.split("/")[0] for p in pointers}
    assert containers == used


def test_the_blob_trigger_is_subscribed_to_its_function_and_folder(
    function_bindings: dict[str, list[dict[str, object]]],
) -> None:
    function = re.search(r"functionName=Host\.Functions\.(\w+)", POSTDEPLOY)
    assert function and function_bindings[function.group(1)][0]["source"] == "EventGrid"
    assert f"/containers/{layout.DROP_CONTAINER}/" in POSTDEPLOY
    assert "topicType: 'Microsoft.Storage.StorageAccounts'" in TEMPLATE
    assert "runtime: { name: 'python', version: '3.11' }" in TEMPLATE
    assert "sku: { tier: 'FlexConsumption', name: 'FC1' }" in TEMPLATE
    azd = yaml.safe_load((REPO / "azure.yaml").read_text("utf-8"))
    assert azd["services"]["api"]["host"] == "function"
    assert azd["hooks"]["postdeploy"]["posix"]["run"] == "./infra/scripts/postdeploy.sh"
    outputs = set(re.findall(r"^output (\w+)", MAIN, flags=re.MULTILINE))
    used = set(re.findall(r"\$\{?(AZURE_[A-Z_]+)", POSTDEPLOY))
    assert used <= outputs, used - outputs  # what the hook reads, main.bicep outputs
