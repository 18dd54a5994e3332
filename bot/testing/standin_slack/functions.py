"""Workflow Builder steps (custom functions of a Bolt app): the `function_executed` event Slack sends when a workflow
reaches the app's step, and functions.completeSuccess / functions.completeError, which end that execution.

As Slack documents them: the event carries the function's definition, its `inputs`, a `function_execution_id`, a
`workflow_execution_id` and a `bot_access_token` for calls made during the step (it dies when the step completes,
or FUNCTION_TOKEN_TTL after the event). An execution is completed once: a second completion answers
`execution_not_in_running_state`, an unknown id `function_execution_not_found`, and outputs missing a required
output parameter `parameter_validation_failed`. Completions accept the workspace's bot token or the step's own.
"""

from __future__ import annotations

import copy
import json
import secrets
import time
from collections.abc import Mapping
from typing import Any

from bot.testing.standin_slack.common import (
    DEFAULT_APP_ID,
    DEFAULT_BOT_USER_ID,
    DEFAULT_TEAM_ID,
    JsonDict,
    _SlackError,
)
from bot.testing.standin_slack.core import StandInCore
from bot.testing.standin_slack.payloads import event_callback

# Slack: a step's token expires 15 minutes after it was issued, or when the step completes, whichever is first.
FUNCTION_TOKEN_TTL = 15 * 60.0


def user_context(user: str) -> JsonDict:
    """The value of a `slack#/types/user_context` input: the person, and the secret Slack vouches for them with."""
    return {"id": user, "secret": secrets.token_hex(16)}


def _parameters(declared: Mapping[str, Mapping[str, Any]]) -> list[JsonDict]:
    """A manifest's `input_parameters`/`output_parameters` (name -> definition) as the event lists them."""
    listed = []
    for name, definition in declared.items():
        parameter = {"name": name, "type": definition.get("type", "string"), "title": definition.get("title", name),
                     "description": definition.get("description", ""),
                     "is_required": bool(definition.get("is_required", False))}
        listed.append(parameter)
    return listed


def function_executed_event(
    callback_id: str,
    inputs: Mapping[str, Any],
    *,
    definition: Mapping[str, Any] | None = None,
    function_execution_id: str | None = None,
    workflow_execution_id: str | None = None,
    bot_access_token: str | None = None,
    team_id: str = DEFAULT_TEAM_ID,
    api_app_id: str = DEFAULT_APP_ID,
    bot_user_id: str = DEFAULT_BOT_USER_ID,
) -> JsonDict:
    """The `event_callback` body of a `function_executed` event for the app's function `callback_id`, as Slack's
    reference shows it; `definition`: the manifest's entry for the function (title, description, parameters)."""
    definition = definition or {}
    now = time.time()
    event = {
        "type": "function_executed",
        "function": {
            "id": "Fn" + secrets.token_hex(5).upper(),
            "callback_id": callback_id,
            "title": definition.get("title", callback_id),
            "description": definition.get("description", ""),
            "type": "app",
            "input_parameters": _parameters(definition.get("input_parameters") or {}),
            "output_parameters": _parameters(definition.get("output_parameters") or {}),
            "app_id": api_app_id,
            "date_created": int(now) - 86400,
            "date_updated": int(now) - 3600,
            "date_deleted": 0,
        },
        "inputs": copy.deepcopy(dict(inputs)),
        "function_execution_id": function_execution_id or "Fx" + secrets.token_hex(5).upper(),
        "workflow_execution_id": workflow_execution_id or "Wx" + secrets.token_hex(5).upper(),
        "event_ts": f"{now:.6f}",
        "bot_access_token": bot_access_token or f"xwfp-{secrets.token_hex(6)}-{secrets.token_urlsafe(24)}",
    }
    return event_callback(event, team_id=team_id, api_app_id=api_app_id, bot_user_id=bot_user_id)


class Functions(StandInCore):
    """Executions of the app's Workflow Builder steps and their completions (recorded in `.completions`)."""

    def function_executed(
        self, callback_id: str, inputs: Mapping[str, Any], *, definition: Mapping[str, Any] | None = None
    ) -> JsonDict:
        """A workflow reaching the app's step `callback_id` now, in the workspace acted in: the event to deliver
        (kind="event"), its execution running here until completed."""
        body = function_executed_event(
            callback_id, inputs, definition=definition, team_id=self.team_id, api_app_id=self.app_id,
            bot_user_id=self.bot_user_id,
        )
        event = body["event"]
        required = [p["name"] for p in event["function"]["output_parameters"] if p["is_required"]]
        with self._cond:
            self._executions[event["function_execution_id"]] = {
                "callback_id": callback_id, "team": self.team_id, "state": "running", "required": required,
                "token": event["bot_access_token"],
            }
            self._function_tokens[event["bot_access_token"]] = {
                "team": self.team_id, "issued": time.monotonic(), "execution": event["function_execution_id"],
            }
        return body

    def completions_of(self, execution_id: str) -> list[JsonDict]:
        """The completions accepted for one execution (at most one, as in Slack)."""
        with self._cond:
            return [copy.deepcopy(c) for c in self.completions if c["function_execution_id"] == execution_id]

    def execution_state(self, execution_id: str) -> str | None:
        """"running", "completed" or "failed" (None: no such execution)."""
        with self._cond:
            execution = self._executions.get(execution_id)
            return execution["state"] if execution else None

    def _function_token_error(self, token: str) -> str | None:
        """Why a step's token no longer works (None: it does, or it is no step's token)."""
        issued = self._function_tokens.get(token)
        if issued is None:
            return None
        if self._executions.get(issued["execution"], {}).get("state", "running") != "running":
            return "token_revoked"
        if time.monotonic() - issued["issued"] > FUNCTION_TOKEN_TTL:
            return "token_expired"
        return None

    # Web API ------------------------------------------------------------------------------------------

    def _running_execution(self, params: JsonDict) -> tuple[str, JsonDict]:
        execution_id = params.get("function_execution_id")
        if not execution_id:
            raise _SlackError("invalid_arguments")
        execution = self._executions.get(execution_id)
        if execution is None or execution["team"] != self.team_id:
            raise _SlackError("function_execution_not_found")
        if execution["state"] != "running":
            raise _SlackError("execution_not_in_running_state")
        return execution_id, execution

    def _functions_complete_success(self, params: JsonDict) -> JsonDict:
        execution_id, execution = self._running_execution(params)
        outputs = params.get("outputs")
        if isinstance(outputs, str | bytes):
            try:
                outputs = json.loads(outputs)
            except ValueError:
                raise _SlackError("invalid_arguments") from None
        if not isinstance(outputs, dict):
            raise _SlackError("invalid_arguments")
        missing = [name for name in execution["required"] if outputs.get(name) in (None, "")]
        if missing:
            raise _SlackError("parameter_validation_failed", errors=[f"missing required output: {n}" for n in missing])
        execution["state"] = "completed"
        self._record_completion("functions.completeSuccess", execution_id, {"outputs": outputs})
        return {}

    def _functions_complete_error(self, params: JsonDict) -> JsonDict:
        execution_id, execution = self._running_execution(params)
        error = params.get("error")
        if not isinstance(error, str) or not error:
            raise _SlackError("invalid_arguments")
        execution["state"] = "failed"
        self._record_completion("functions.completeError", execution_id, {"error": error})
        return {}

    def _record_completion(self, method: str, execution_id: str, result: JsonDict) -> None:
        token = getattr(self._acting, "token", None)
        by = "function" if token in self._function_tokens else "bot"
        self.completions.append({"method": method, "function_execution_id": execution_id, "token": by,
                                 "time": time.time(), **result})
