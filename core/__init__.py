"""The ground floor: settings, the data folder's layout, the manifest and its named queries.

Every stage imports from here; nothing here imports a stage.
"""
