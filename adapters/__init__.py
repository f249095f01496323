"""Adapters that put psann_stream's models into other systems (river, Ray, Kafka), installed as
``psann_stream.adapters``. Each adapter lives in its own module and imports its optional
dependency only when used."""
