"""Supervisor dashboard: KPIs over a date range, PCRM analytics and a searchable interaction log.

``GET /supervisor`` (HTML), ``GET /supervisor/kpis.json`` (the same figures as JSON, the analytics
of :mod:`bot.analytics` under ``analytics``), ``GET /supervisor/interactions.json`` and
``GET /supervisor/interactions.csv`` (the filtered log), ``GET /supervisor/unrecognised.yml``
(not-understood messages as Rasa NLU training data) and ``GET /supervisor/conversations/{id}``
(one whole transcript). Supervisors and admins only.

One module per concern, so each stays small and readable on its own:

* :mod:`bot.supervisor.access` — who may call (the dependencies every route declares);
* :mod:`bot.supervisor.filters` — range and log filters from the query string;
* :mod:`bot.supervisor.queries` — the figures and the log (SQL, no HTTP);
* :mod:`bot.supervisor.view` — the dashboard's words and formats (no markup);
* :mod:`bot.supervisor.routes` — the routes; pages from ``bot/web/templates/supervisor/``,
  which extend the console's layout: the dashboard looks like the console it links to.
"""

from bot.supervisor.filters import Filters, parse_filters
from bot.supervisor.queries import kpis, search
from bot.supervisor.routes import router

__all__ = ["Filters", "kpis", "parse_filters", "router", "search"]
