"""otgate.actors"""
