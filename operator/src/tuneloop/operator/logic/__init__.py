"""Pure decisions of the controllers: no I/O, no vendor SDKs, no clocks (time is an argument).

Modules here are importable by any controller (FineTune now, ModelDeployment later) and are tested
as tables of named cases.
"""
