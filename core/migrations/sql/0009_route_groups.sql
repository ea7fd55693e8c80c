-- Migration 0009: route groups (issue 16). An alias may carry a policy: ordered targets with
-- weights and priorities, a balancing strategy, fallbacks and an attempt budget
-- (core/routeplan.py); and a usage record keeps the backend calls its request made.
ALTER TABLE routes ADD COLUMN policy TEXT NOT NULL DEFAULT '{}';
ALTER TABLE usage_records ADD COLUMN route_attempts TEXT;
