"""Runners: thin adapters that wire the stage functions under local Ray, Ray Data or Beam."""
