"""`valueFrom.env` never hands the control plane's own configuration or credentials to a project.

The attack the review found: `valueFrom: {env: KLIV_SECRET_KEY}` (or
`KLIV_DATABASE_URL`) copied kliv's key-encryption key into a tenant's secret,
which its functions read. Refused at validation by name, and at apply by name
and by value (a variable holding a copy of a credential).
"""

from __future__ import annotations

from typing import Any

import pytest
from spec_validation import Validate

from kliv.specs import ProjectSecret
from kliv.stacks.errors import SourceRefusedError
from kliv.stacks.secrets.provider import environment_values


def _secret(env: str) -> str:
    return (
        "apiVersion: cloud.kliv.dev/v1alpha1\nkind: ProjectSecret\nmetadata: {name: stolen}\n"
        f"spec: {{projectRef: {{name: demo}}, valueFrom: {{env: {env}}}}}\n"
    )


def _model(env: str) -> ProjectSecret:
    data: dict[str, Any] = {
        "apiVersion": "cloud.kliv.dev/v1alpha1",
        "kind": "ProjectSecret",
        "metadata": {"name": "stolen"},
        "spec": {"projectRef": {"name": "demo"}, "valueFrom": {"env": "STRIPE_KEY"}},
    }
    secret = ProjectSecret.model_validate(data)
    # Past validation, as if a spec reached the provider some other way (an older admission).
    value_from = secret.spec.value_from.model_copy(update={"env": env})  # type: ignore[union-attr]
    return secret.model_copy(update={"spec": secret.spec.model_copy(update={"value_from": value_from})})


class TestValidation:
    @pytest.mark.parametrize(
        "name",
        ["KLIV_SECRET_KEY", "KLIV_DATABASE_URL", "PGPASSWORD", "AWS_SECRET_ACCESS_KEY", "DATABASE_URL",
         "GOOGLE_APPLICATION_CREDENTIALS", "KUBECONFIG", "HOME", "kliv_secret_key"],
    )  # fmt: skip
    def test_control_plane_variables_are_refused(self, validate: Validate, name: str) -> None:
        [problem] = validate(_secret(name)).errors
        assert problem.path == "/spec/valueFrom/env"
        assert "kliv never copies it into a project" in problem.message
        assert "STRIPE_KEY" in problem.hint

    def test_an_application_variable_is_fine(self, validate: Validate) -> None:
        assert validate(_secret("STRIPE_KEY")).errors == []


class TestEnvironmentValues:
    def test_value_of_an_own_variable_is_not_read(self) -> None:
        values = environment_values({"KLIV_SECRET_KEY": "k" * 43})
        with pytest.raises(SourceRefusedError, match="control plane's own"):
            values(_model("KLIV_SECRET_KEY"))

    def test_a_copy_of_a_credential_is_refused(self) -> None:
        key = "Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5"
        environ = {"KLIV_SECRET_KEY": key, "MY_COPY": key, "STRIPE_KEY": "sk_test_1"}
        values = environment_values(environ)
        with pytest.raises(SourceRefusedError, match="holds one of the control plane's own credentials") as error:
            values(_model("MY_COPY"))
        assert key not in str(error.value)
        assert values(_model("STRIPE_KEY")) == "sk_test_1"

    def test_withheld_settings_are_refused_inside_a_value(self) -> None:
        """A password from kliv.toml's database URL, embedded in a longer value, is still found."""
        values = environment_values({"APP_URL": "postgres://app:hunter2hunter2@db/app"}, ["hunter2hunter2"])
        with pytest.raises(SourceRefusedError):
            values(_model("APP_URL"))


class TestReviewFindings:
    """What the attacker's review found: an encoded password, and credential variables the list missed."""

    @pytest.mark.parametrize("name", ["POSTGRES_PASSWORD", "ACTIONS_ID_TOKEN_REQUEST_TOKEN", "OS_PASSWORD",
                                      "CONSUL_HTTP_TOKEN", "MINIO_ROOT_PASSWORD", "CLOUDFLARE_API_KEY"])  # fmt: skip
    def test_more_credential_variables(self, validate: Validate, name: str) -> None:
        [problem] = validate(_secret(name)).errors
        assert problem.path == "/spec/valueFrom/env"

    @pytest.mark.parametrize(
        "url",
        ["postgresql://postgres:p%40ssw0rd-secret@db:5432/postgres", "host=db user=postgres password=p@ssw0rd-secret"],
    )
    def test_a_percent_encoded_or_dsn_password_is_withheld(self, url: str) -> None:
        from kliv.cli import _own_credentials
        from kliv.config import Settings

        settings = Settings(database_url=url)
        values = environment_values({"APP_DB": "p@ssw0rd-secret"}, _own_credentials(settings, None))
        with pytest.raises(SourceRefusedError):
            values(_model("APP_DB"))
