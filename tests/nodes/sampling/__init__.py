"""Tests of nodes/sampling: model sampling, schedules, samplers, noise."""
