"""Secrets never reach a run's record: by name, by value copied elsewhere, in URLs, on the command line."""

import pytest

from pipeline.tracking.redact import REDACTED, is_secret_name, redact, redact_argv, redact_text


@pytest.mark.parametrize("name", ["api_key", "WANDB_API_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                  "AWS_SESSION_TOKEN", "apiKey", "key", "secret", "password", "HF_TOKEN",
                                  "credentials", "Authorization"])
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["n_critic", "sort_keys", "storage_options", "noise_seed", "keyframe", "PATH",
                                  "max_bad_fraction", "monitor"])
def test_ordinary_names(name):
    assert not is_secret_name(name)


def test_tree_redacts_secret_keys_and_their_values_everywhere(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", "env-token-123456")
    tree = {"data": {"storage_options": {"key": "AKIAEXAMPLE1", "secret": "s3cr3t-value", "anon": False,
                                         "client_kwargs": {"headers": {"Authorization": "Bearer xyz123456"}}},
                     "urls": ["s3://bucket/AKIAEXAMPLE1/shard-0.tar", "https://user:hunter22@host/a.tar",
                              "https://host/b.tar?X-Amz-Signature=abcdef&part=1"]},
            "notes": "pulled with env-token-123456", "n_critic": 5, "use_token": False}
    out = redact(tree)
    options = out["data"]["storage_options"]
    assert options["key"] == options["secret"] == options["client_kwargs"]["headers"]["Authorization"] == REDACTED
    assert options["anon"] is False and out["n_critic"] == 5 and out["use_token"] is False  # flags/numbers stay
    assert out["data"]["urls"] == [f"s3://bucket/{REDACTED}/shard-0.tar", f"https://user:{REDACTED}@host/a.tar",
                                   f"https://host/b.tar?X-Amz-Signature={REDACTED}&part=1"]
    assert out["notes"] == f"pulled with {REDACTED}"
    assert tree["data"]["storage_options"]["key"] == "AKIAEXAMPLE1"  # the input is left alone


def test_command_line_redaction(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-aws-secret-1")
    argv = ["fit", "--data.init_args.storage_options.secret", "cli-secret-1", "--x.api_key=cli-key-22",
            "--data.init_args.storage_options", '{"key": "AKIAINLINE9", "secret": "inline-secret-3"}',
            "--trainer.logger.init_args.notes", "copied env-aws-secret-1 and cli-secret-1", "--model.n_critic", "5"]
    out = redact_argv(argv)
    assert out == ["fit", "--data.init_args.storage_options.secret", REDACTED, f"--x.api_key={REDACTED}",
                   "--data.init_args.storage_options", f'{{"key": "{REDACTED}", "secret": "{REDACTED}"}}',
                   "--trainer.logger.init_args.notes", f"copied {REDACTED} and {REDACTED}", "--model.n_critic", "5"]


def test_short_values_are_not_scrubbed_from_text(monkeypatch):
    monkeypatch.setenv("SOME_TOKEN", "1")  # too short to be told apart from ordinary text
    assert redact_text("step 1 of 10") == "step 1 of 10"
