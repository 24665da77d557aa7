"""Arguments only known when Airflow renders the task (Jinja templates, XComArgs, mapped arguments): not checked when
the DAG is parsed, checked once rendered."""

from __future__ import annotations

import pendulum
import pytest

from airflow_provider_wdata._compat import AIRFLOW_V_3_3_PLUS, DAG, task, task_group
from airflow_provider_wdata.arguments import is_resolved_by_airflow, is_templated
from airflow_provider_wdata.exceptions import WdataConfigError
from airflow_provider_wdata.hooks.wdata import WdataHook
from airflow_provider_wdata.operators.wdata import WdataRefreshBatchOperator
from airflow_provider_wdata.sensors.wdata import BatchRefreshSensor, ConnectionRefreshSensor

FAST_HOOK = {"backoff_initial": 0.01, "backoff_max": 0.02, "max_attempts": 2}


def a_dag() -> DAG:
    return DAG("taskflow", schedule=None, start_date=pendulum.datetime(2026, 1, 1))


@task
def get_ids() -> list[str]:
    return ["conn-1", "conn-2"]


@task
def get_id() -> str:
    return "conn-1"


class RenderingTaskInstance:
    """Just enough of a task instance for Airflow to resolve an XComArg to ``value`` when it renders a task."""

    def __init__(self, value: object) -> None:
        self.value = value

    def xcom_pull(self, *args: object, **kwargs: object) -> object:
        return self.value

    def get_relevant_upstream_map_indexes(self, *args: object, **kwargs: object) -> None:  # read by Airflow 2.11
        return None


def render(operator, xcom_value: object) -> None:
    operator.render_template_fields({"ti": RenderingTaskInstance(xcom_value), "expanded_ti_count": None})


@pytest.mark.parametrize(
    ("value", "templated"),
    [
        ("b-1", False),
        ("{{ ti.xcom_pull('start') }}", True),
        ("{% if true %}b{% endif %}", True),
        (["conn-1", {"connection_id": "c", "source_parameters": {"year": "{{ ds }}"}}], True),
        (["conn-1", {"connection_id": "c"}], False),
        (None, False),
        (42, False),
    ],
)
def test_jinja_templates_are_templated(value, templated):
    assert is_templated(value) is templated
    assert is_resolved_by_airflow(value) is False


def test_xcom_args_are_templated_also_inside_lists_and_dicts():
    with a_dag():
        ids, one = get_ids(), get_id()
    for value in (ids, [one, "conn-2"], ({"connection_id": one},), {"key": [one]}):
        assert is_templated(value) and is_resolved_by_airflow(value)


def test_taskflow_results_are_taken_when_the_dag_is_parsed():
    with a_dag() as dag:
        start = WdataRefreshBatchOperator(task_id="start", connections=get_ids(), wait_for_completion=False)
        wait = BatchRefreshSensor(task_id="wait", batch_id=start.output)
        WdataRefreshBatchOperator(task_id="some", connections=[get_id(), "conn-2"], wait_for_completion=False)
        ConnectionRefreshSensor(task_id="wait_one", connection_id=get_id(), job_id=start.output)
    assert start.upstream_task_ids == {"get_ids"}
    assert wait.upstream_task_ids == {"start"}
    assert dag.task_dict["wait_one"].upstream_task_ids == {"start", "get_id__1"}


def test_mapped_task_group_arguments_are_taken_when_the_dag_is_parsed():
    with a_dag() as dag:

        @task_group
        def wait_for(batch_id):
            BatchRefreshSensor(task_id="wait", batch_id=batch_id)

        wait_for.expand(batch_id=["b-1", "b-2"])
    assert "wait_for.wait" in dag.task_dict


def test_a_rendered_batch_id_is_read(wdata_conn):
    batch_id = WdataHook().start_batch_refresh(["conn-1"]).batch_refresh_id
    with a_dag():
        wait = BatchRefreshSensor(
            task_id="wait", batch_id=get_id(), deferrable=False, poke_interval=0.05, hook_params=FAST_HOOK
        )
    render(wait, batch_id)
    assert wait.batch_id == batch_id
    wait.poke({})
    assert wait.poke({}).xcom_value["batch_refresh_id"] == batch_id


@pytest.mark.parametrize(("rendered", "message"), [("a/b", "not a valid Wdata id"), (None, "non-empty string")])
@pytest.mark.parametrize("deferrable", [False, True])
def test_a_bad_rendered_batch_id_is_refused_before_any_request(wdata_conn, rendered, message, deferrable):
    with a_dag():
        wait = BatchRefreshSensor(task_id="wait", batch_id=get_id(), deferrable=deferrable, hook_params=FAST_HOOK)
    render(wait, rendered)
    with pytest.raises(WdataConfigError, match=f"batch_id.*{message}"):
        wait.poke({}) if not deferrable else wait.execute({})
    assert wdata_conn.requests == []


def test_bad_rendered_connections_are_refused_before_any_request(wdata_conn):
    with a_dag():
        refresh = WdataRefreshBatchOperator(task_id="refresh", connections=get_ids(), deferrable=False, durable=False)
    render(refresh, ["conn-1", "conn-1"])
    with pytest.raises(WdataConfigError, match="more than once"):
        refresh.execute({})
    assert wdata_conn.requests == []


@pytest.mark.skipif(not AIRFLOW_V_3_3_PLUS, reason="start_from_trigger needs Airflow 3.3")
def test_start_from_trigger_refuses_an_xcom_arg_it_could_not_resolve():
    with a_dag(), pytest.raises(WdataConfigError, match=r"cannot take batch_id from an XComArg.*ti\.xcom_pull"):
        BatchRefreshSensor(task_id="wait", batch_id=get_id(), start_from_trigger=True)
    with a_dag():
        BatchRefreshSensor(task_id="wait", batch_id="{{ ti.xcom_pull(task_ids='start') }}", start_from_trigger=True)
