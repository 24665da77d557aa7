"""End-to-end tests: a real Airflow (api-server, scheduler, dag-processor, triggerer) against the simulator."""
