"""Unit tables for the training job pure logic."""
