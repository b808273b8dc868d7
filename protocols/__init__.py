"""otgate.protocols"""
