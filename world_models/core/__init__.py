"""The bottom layer, imported by every other: errors, device choice, atomic files, folder
locks, checkpoint folders, config (de)serialisation and pictures. Nothing here imports
another layer of the package."""
