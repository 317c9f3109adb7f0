"""LangChain's standard test suite for Deep Agents sandbox backends
(`langchain_tests.integration_tests.SandboxIntegrationTests`, from the `langchain-tests` package),
run unchanged against Deep Agents' `LangSmithSandbox` on a Warren sandbox: the suite other
providers (Daytona, Modal, Runloop) run against theirs. Commands, file writes, reads (text,
binary, paginated, large), edits, ls, glob, grep, uploads and downloads, sync and async."""

from __future__ import annotations

import pytest
from deepagents.backends import LangSmithSandbox
from langchain_tests.integration_tests import SandboxIntegrationTests

from helpers import uniq


class TestWarrenSandboxStandard(SandboxIntegrationTests):
    @pytest.fixture(scope="class")
    def sandbox(self, client):
        with client.sandbox(name=uniq("standard")) as sb:
            yield LangSmithSandbox(sb)
